"""The app server of ``coco --application``: core4's containers and every
installed project's containers (each served from its own environment, see
:mod:`core4.api.child`) on one port, registered in ``sys_worker`` as a
daemon of kind ``app`` and stopped by ``coco --halt``, SIGTERM or SIGINT.

``coco --application [NAME] [--port P] [--address A] [--project P]
[--filter PREFIX ...]``:

* ``--project P`` serves only the containers of project ``P``
  (``--project core4``: only core4's own);
* ``--filter`` serves only containers whose qualified name starts with
  one of the prefixes (projects none of them can match are not started).

Containers that share a root or a route, and bad roots, are refused at
start (exit 2, one line); so is an app server with nothing to serve. A
project that cannot be served is logged with its name and left out.
"""

import asyncio
import logging
import os
import signal

import tornado.httpserver

from core4.api import child, discover
from core4.api.application import (bind, build_application,
                                  setup_access_log)
from core4.api.context import ApiContext
from core4.base import hostname
from core4.config.folders import ensure_folders
from core4.error import Core4UserError
from core4.mongo import now
from core4.mongo.connection import TRANSIENT, revive, short_error
from core4.queue.daemon import register, set_phase, unregister

log = logging.getLogger("core4.api.server")


class AppServer:
    """``coco --application``: serve, heartbeat, stop on halt or signal.

    ``project`` serves only that project's containers (``"core4"``: only
    core4's own), ``filters`` only containers whose qualified name starts
    with one of them.
    """

    kind = "app"

    def __init__(self, name, config, port=None, address=None, project=None,
                 filters=None):
        self.config = config
        self.name = name
        self.identifier = "%s@%s" % (name, hostname())
        self.port = config.api.port if port is None else port
        self.address = address or config.api.address
        self.project = project
        self.filters = filters or None
        self.children = []
        self._stop = None
        self.url = None

    def start(self):
        """Serve until halted or signalled."""
        from core4.logger import setup_logging
        setup_logging(self.config)
        ensure_folders(self.config)
        asyncio.run(self._serve())

    async def _serve(self):
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        context = ApiContext(self.config)
        sockets = bind(self.port, self.address)
        port = sockets[0].getsockname()[1]
        self.url = "http://%s:%d" % (self.address, port)
        registered = False
        heartbeat = None
        try:
            await loop.run_in_executor(context.executor, context.setup)
            register(context.system, self.identifier, self.kind,
                     self.config, port=port, address=self.address,
                     url=self.url, containers=[])
            registered = True
            heartbeat = asyncio.ensure_future(self._heartbeat(
                context, now()))
            containers = ([] if self.project not in (None, "core4")
                          else discover.core4_containers(self.filters))
            if self.project != "core4":
                self.children = await loop.run_in_executor(
                    None, child.start_projects, self.config, self.project,
                    self.filters)
            proxies = [(root, c.url, name) for c in self.children
                       for root, name in zip(c.roots, c.containers)]
            app = build_application(containers, context, proxies,
                                    debug=bool(self.config.api.debug))
            setup_access_log(self.config)
            names = [c.qual_name() for c in app.core4_containers] + [
                q for c in self.children for q in c.containers]
            if not names:
                raise Core4UserError("no container to serve%s" % (
                    " (see the log above)" if self.project or self.filters
                    else ""))
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            context.system.worker.update_one(
                {"_id": self.identifier}, {"$set": {"containers": names}})
            set_phase(context.system, self.identifier, "loop")
            log.info("app server %s serving %s (pid %d): %s",
                     self.identifier, self.url, os.getpid(),
                     ", ".join(names))
            print("core4: serving on %s" % self.url, flush=True)
            await self._stop.wait()
            server.stop()
            try:
                await asyncio.wait_for(server.close_all_connections(), 5)
            except asyncio.TimeoutError:
                pass
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if self.children:
                await loop.run_in_executor(None, child.stop_all,
                                           self.children)
            if registered:
                try:
                    await loop.run_in_executor(
                        context.executor, unregister, context.system,
                        self.identifier)
                except Exception as exc:
                    log.error("cannot unregister %s: %s", self.identifier,
                              exc)
            context.close()
            for sock in sockets:
                sock.close()
            log.info("app server %s stopped", self.identifier)

    async def _heartbeat(self, context, started):
        """Renew the heartbeat; stop when a halt is requested."""
        loop = asyncio.get_running_loop()
        interval = float(self.config.daemon.heartbeat)
        lost = False
        while not self._stop.is_set():
            try:
                halted = await loop.run_in_executor(
                    context.executor, self._beat, context, started)
                if lost:
                    log.warning("database reachable again")
                    lost = False
            except TRANSIENT as exc:
                if not lost:  # one line when it is lost, one when back
                    log.error("database unreachable: %s", short_error(exc))
                    lost = True
                # the embedded server, if it died, is started again
                await loop.run_in_executor(context.executor, revive,
                                           self.config)
                halted = False
            except Exception as exc:
                log.error("heartbeat failed: %s", exc)
                halted = False
            if halted:
                log.info("stopping: halt requested")
                self._stop.set()
                return
            try:
                await asyncio.wait_for(self._stop.wait(), min(interval, 1.0))
            except asyncio.TimeoutError:
                pass

    def _beat(self, context, started):
        context.system.worker.update_one(
            {"_id": self.identifier}, {"$set": {"heartbeat": now()}})
        return context.queue.halted_since(started)
