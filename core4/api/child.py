"""Serve a project's containers from the project's own environment.

The app server starts ``<project>/.venv/bin/python -P -m core4.api.child
PROJECT [FILTER ...]`` for each installed project. The child finds the
project's containers, listens on a free loopback port, answers one JSON
line ``{"port": ..., "containers": [...], "roots": [...]}`` and serves
until its stdin closes (the app server ended) or it is signalled. The app
server forwards requests under those roots to it (:mod:`core4.api.proxy`).
"""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading

log = logging.getLogger("core4.api.child")
START_TIMEOUT = 120


class ProjectServer:
    """A running child app server of one project (in the parent)."""

    def __init__(self, project, process, answer):
        self.project = project
        self.process = process
        self.port = answer["port"]
        self.url = "http://127.0.0.1:%d" % self.port
        self.containers = answer["containers"]
        self.roots = answer["roots"]

    def stop(self):
        """Stop the child (closing its stdin, then SIGTERM)."""
        if self.process.poll() is not None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_projects(config, only=None, filters=None):
    """Start a child for every installed project (or only ``only``);
    return the :class:`ProjectServer` of those that have containers.

    A project whose environment is missing or broken is logged and left
    out; the others are served.
    """
    from core4.error import Core4UserError
    from core4.project.home import installed_projects
    projects = installed_projects(config)
    if only and only not in [p["name"] for p in projects]:
        raise Core4UserError("project %s is not installed in %s" % (
            only, config.folder.home))
    result = []
    for project in projects:
        if only and project["name"] != only:
            continue
        if project["python"] is None:
            log.error("project %s has no virtual environment: its containers "
                      "are not served", project["name"])
            continue
        server = _start(project, filters or [])
        if server is not None:
            result.append(server)
    return result


def _start(project, filters):
    process = subprocess.Popen(
        [project["python"], "-P", "-m", "core4.api.child", project["name"]]
        + list(filters), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    line = []
    reader = threading.Thread(target=lambda: line.append(
        process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    try:
        answer = json.loads(line[0]) if line and line[0] else None
    except ValueError:
        answer = None
    if answer is None or "error" in answer:
        log.error("project %s: its app server did not start: %s",
                  project["name"], (answer or {}).get(
                      "error", "no answer (see its output above)"))
        process.kill()
        process.wait()
        return None
    if not answer["containers"]:
        process.stdin.close()
        process.wait()
        return None
    log.info("project %s serves %s from %s on port %d", project["name"],
             ", ".join(answer["roots"]), project["python"], answer["port"])
    return ProjectServer(project["name"], process, answer)


async def _serve(project, filters):
    from core4.api.context import ApiContext
    from core4.api.discover import find_containers
    from core4.api.server import bind, build_application
    from core4.config import get_config
    import tornado.httpserver
    config = get_config(project)
    containers = find_containers(project, filters)
    if not containers:
        print(json.dumps({"port": None, "containers": [], "roots": []}),
              flush=True)
        return
    context = ApiContext(config)
    context.setup(announce_admin=False)
    app = build_application(containers, context,
                            debug=bool(config.api.debug))
    sockets = bind(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app, xheaders=True)
    server.add_sockets(sockets)
    print(json.dumps({
        "port": sockets[0].getsockname()[1],
        "containers": [c.qual_name() for c in app.core4_containers],
        "roots": [c.settings(config)[1] for c in app.core4_containers]}),
        flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: (
        os.read(sys.stdin.fileno(), 4096) or stop.set()))
    await stop.wait()
    server.stop()
    context.close()


def main():
    """``python -m core4.api.child PROJECT [FILTER ...]``."""
    from core4.logger import setup_logging
    from core4.config import get_config
    project, filters = sys.argv[1], sys.argv[2:]
    try:
        setup_logging(get_config(project))
        asyncio.run(_serve(project, filters))
    except Exception as exc:
        print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}),
              flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
