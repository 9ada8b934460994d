"""Serve a project's containers from the project's own environment.

The app server starts ``<home>/<project>/.venv/bin/python -P -m
core4.api.child PROJECT [FILTER ...]`` for each installed project (all at
once). The child imports the project's package, finds its containers
(:func:`core4.api.discover.find_containers`), listens on a free loopback
port and answers one JSON line on its standard output::

    {"port": 40123, "containers": ["mypro.api.MyApi"], "roots": ["/mypro"]}

and serves until its standard input closes (the app server ended, however
it ended) or it is signalled. Whatever else the project prints goes to the
child's standard error, which is the app server's. The app server forwards
requests under those roots to it (:mod:`core4.api.proxy`); authentication
happens in the child, against the same database and secrets.

A project that cannot be served (no ``.venv``, a python that does not
start, a package that does not import, no answer in time) is logged with
its name and left out: the app server serves the others. A project whose
containers are misconfigured (shared roots or routes, a bad root) answers
``{"error": ..., "refused": true}`` and the app server refuses to start.
"""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("core4.api.child")

#: seconds a project's server may take to answer
START_TIMEOUT = 120
#: seconds a child may take to stop before it is terminated
STOP_TIMEOUT = 5


class ProjectServer:
    """A running child app server of one project (in the parent)."""

    def __init__(self, project, python, process, answer):
        self.project = project
        self.python = python
        self.process = process
        self.port = answer["port"]
        self.url = "http://127.0.0.1:%d" % self.port
        self.containers = answer["containers"]
        self.roots = answer["roots"]

    @property
    def pid(self):
        """The child's process id."""
        return self.process.pid

    def close(self):
        """Ask the child to stop (close its standard input)."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop the child: close its stdin, then SIGTERM, then SIGKILL."""
        _stop(self.process, timeout)


def _stop(process, timeout=STOP_TIMEOUT):
    if process.poll() is not None:
        return
    try:
        process.stdin.close()
    except OSError:
        pass
    for step in (None, process.terminate, process.kill):
        if step is not None:
            step()
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_all(servers, timeout=STOP_TIMEOUT):
    """Stop the children ``servers`` (all asked at once)."""
    for server in servers:
        server.close()
    for server in servers:
        server.stop(timeout)


def may_serve(project, filters):
    """True if a container of ``project`` can match one of ``filters``
    (prefixes of qualified names; none: every container)."""
    if not filters:
        return True
    prefix = project + "."
    return any(f.startswith(prefix) or prefix.startswith(f)
               for f in filters)


def start_projects(config, only=None, filters=None, timeout=START_TIMEOUT):
    """Start a child for every installed project (or only ``only``) that
    may have containers passing ``filters``; return the
    :class:`ProjectServer` of those that serve containers.

    A project that cannot be served is logged and left out. A project
    whose containers are misconfigured stops every child started and
    raises :class:`~core4.error.Core4UserError`.
    """
    from core4.error import Core4UserError
    from core4.project.home import installed_projects
    projects = installed_projects(config)
    if only and only not in [p["name"] for p in projects]:
        raise Core4UserError("project %s is not installed in %s" % (
            only, config.folder.home))
    started = []
    for project in projects:
        if only and project["name"] != only:
            continue
        if not may_serve(project["name"], filters):
            continue
        if project["python"] is None:
            log.error("project %s has no virtual environment (%s is "
                      "missing): its containers are not served",
                      project["name"], os.path.join(
                          project["root"], ".venv", "bin", "python"))
            continue
        pending = _spawn(project, filters or [])
        if pending is not None:
            started.append(pending)
    deadline = time.monotonic() + timeout
    result, refused = [], None
    for project, process, reader, line in started:
        reader.join(max(0.0, deadline - time.monotonic()))
        server = _answered(project, process, line, timeout)
        if isinstance(server, str):
            refused = refused or server
        elif server is not None:
            result.append(server)
    if refused:
        stop_all(result)
        raise Core4UserError(refused)
    return result


def _spawn(project, filters):
    """Start the child of ``project``; return ``(project, process, reader
    thread, [answer line])`` or None."""
    try:
        process = subprocess.Popen(
            [project["python"], "-P", "-m", "core4.api.child",
             project["name"]] + list(filters),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    except OSError as exc:
        log.error("project %s: cannot start %s: %s: its containers are not "
                  "served", project["name"], project["python"],
                  exc.strerror or exc)
        return None
    line = []
    reader = threading.Thread(target=lambda: line.append(
        process.stdout.readline()), daemon=True,
        name="core4-child-%s" % project["name"])
    reader.start()
    return project, process, reader, line


def _answered(project, process, line, timeout):
    """Return the :class:`ProjectServer` of a child that answered, None if
    it cannot serve (logged, stopped) and the refusal message if its
    containers are misconfigured."""
    name = project["name"]
    try:
        answer = json.loads(line[0]) if line and line[0] else None
    except ValueError:
        answer = {"error": "unexpected answer %r" % line[0][:200]}
    if not isinstance(answer, dict):
        answer = None
    if answer is None or "error" in answer:
        process.kill()
        code = process.wait()
        if answer is not None:
            reason = answer["error"]
        elif not line:
            reason = "no answer within %d seconds" % timeout
        else:
            reason = "%s exited with code %s (see its output above)" % (
                project["python"], code)
        if answer is not None and answer.get("refused"):
            return "project %s: %s" % (name, reason)
        log.error("project %s: its containers are not served: %s", name,
                  reason)
        return None
    if not answer.get("containers"):
        log.info("project %s has no container to serve", name)
        _stop(process)
        return None
    log.info("project %s serves %s from %s (pid %d, port %d)", name,
             ", ".join(answer["roots"]), project["python"], process.pid,
             answer["port"])
    return ProjectServer(name, project["python"], process, answer)


# the child ------------------------------------------------------------------

class Refused(Exception):
    """The project's containers are misconfigured (shared roots or routes,
    a bad root): the app server must not start."""


async def _serve(project, filters, answer):
    from core4.api.context import ApiContext
    from core4.api.discover import find_containers
    from core4.api.application import (bind, build_application,
                                      setup_access_log)
    from core4.config import get_config
    from core4.error import Core4UserError
    import tornado.httpserver

    def broken(name, exc):
        if name == project:
            raise RuntimeError("cannot import %s: %s: %s" % (
                name, type(exc).__name__, exc))
        log.error("project %s: cannot import %s: %s: %s", project, name,
                  type(exc).__name__, exc)

    config = get_config(project)
    containers = find_containers(project, filters, on_error=broken)
    if not containers:
        _answer(answer, {"port": None, "containers": [], "roots": []})
        return
    context = ApiContext(config)
    try:
        context.setup(announce_admin=False)
        try:
            app = build_application(containers, context,
                                    debug=bool(config.api.debug))
        except Core4UserError as exc:
            raise Refused(str(exc)) from None
        setup_access_log(config)
        sockets = bind(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        _answer(answer, {
            "port": sockets[0].getsockname()[1],
            "containers": [c.qual_name() for c in app.core4_containers],
            "roots": [c.settings(config)[1] for c in app.core4_containers]})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        stdin = sys.stdin.fileno()
        loop.add_reader(stdin, lambda: os.read(stdin, 4096) or stop.set())
        await stop.wait()
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(),
                                   STOP_TIMEOUT)
        except asyncio.TimeoutError:
            pass
    finally:
        context.close()


def _answer(stream, data):
    stream.write(json.dumps(data) + "\n")
    stream.flush()


def main():
    """``python -m core4.api.child PROJECT [FILTER ...]``."""
    from core4.config import get_config
    from core4.logger import setup_logging
    project, filters = sys.argv[1], sys.argv[2:]
    # the answer goes to the real stdout; anything the project prints, to
    # stderr (a full pipe nobody reads would block the child)
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        setup_logging(get_config(project))
        asyncio.run(_serve(project, filters, answer))
    except Refused as exc:
        _answer(answer, {"error": str(exc), "refused": True})
        return 2
    except Exception as exc:
        _answer(answer, {"error": "%s: %s" % (type(exc).__name__, exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
