"""The app server of ``coco --application``: core4's containers and every
installed project's containers (each served from its own environment, see
:mod:`core4.api.child`) on one port, registered in ``sys_worker`` as a
daemon of kind ``app`` and stopped by ``coco --halt``."""

import asyncio
import errno
import logging
import os
import signal

import tornado.httpserver
import tornado.netutil
import tornado.web

from core4.api.container import check_unique
from core4.api.context import ApiContext
from core4.api.handler import NotFoundHandler
from core4.api.proxy import ProxyHandler
from core4.base import hostname
from core4.error import Core4UserError
from core4.mongo import now
from core4.queue.daemon import register, set_phase, unregister

log = logging.getLogger("core4.api.server")


def build_application(containers, context, proxies=(), debug=False):
    """Return the tornado application serving ``containers`` (enabled
    ones) and ``proxies`` (``[(root, target url)]``); refuse shared roots
    and routes."""
    config = context.config
    check_unique(containers, config)
    roots = {container.settings(config)[1]: container.qual_name()
             for container in containers}
    rules = []
    for root, target in proxies:
        if root in roots:
            raise Core4UserError("project container at %s clashes with %s"
                                 % (root, roots[root]))
        roots[root] = target
        rules.append((len(root), tornado.web.url(
            root + "(?:/.*)?", ProxyHandler,
            {"context": context, "target": target})))
    served = []
    for container in containers:
        enabled, root = container.settings(config)
        if not enabled:
            continue
        served.append(container)
        for pattern, handler, kwargs in container.routes(config):
            rules.append((len(root), tornado.web.url(
                pattern, handler, dict(kwargs, context=context))))
    # longer roots first: "/" of the dashboard must not shadow the API
    rules.sort(key=lambda item: -item[0])
    app = tornado.web.Application(
        [rule for _, rule in rules], debug=debug,
        autoreload=False, cookie_secret=context.secrets["cookie"],
        default_handler_class=NotFoundHandler,
        default_handler_args={"context": context})
    app.core4_containers = served
    app.core4_context = context
    return app


def bind(port, address):
    """Return the listening sockets, or a clear error if the port is
    taken or the address invalid."""
    try:
        return tornado.netutil.bind_sockets(port, address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Core4UserError("port %s on %s is already in use" % (
                port, address)) from None
        raise Core4UserError("cannot listen on %s:%s: %s" % (
            address, port, exc.strerror or exc)) from None


class AppServer:
    """``coco --application``: serve, heartbeat, stop on halt or signal."""

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
        asyncio.run(self._serve())

    async def _serve(self):
        from core4.api import child, discover
        self._stop = asyncio.Event()
        context = ApiContext(self.config)
        sockets = bind(self.port, self.address)
        try:
            await asyncio.get_running_loop().run_in_executor(
                context.executor, context.setup)
            containers = ([] if self.project
                          else discover.core4_containers(self.filters))
            self.children = child.start_projects(
                self.config, self.project, self.filters)
            proxies = [(root, c.url) for c in self.children
                       for root in c.roots]
            app = build_application(containers, context, proxies,
                                    debug=bool(self.config.api.debug))
            server = tornado.httpserver.HTTPServer(app, xheaders=True)
            server.add_sockets(sockets)
            port = sockets[0].getsockname()[1]
            self.url = "http://%s:%d" % (self.address, port)
            register(context.system, self.identifier, self.kind,
                     self.config, port=port, address=self.address,
                     url=self.url, containers=[
                         c.qual_name() for c in app.core4_containers] + [
                         q for c in self.children for q in c.containers])
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._stop.set)
            set_phase(context.system, self.identifier, "loop")
            log.info("app server %s serving %s (pid %d): %s", self.identifier,
                     self.url, os.getpid(), ", ".join(
                         sorted(app.default_router.named_rules) or
                         [c.qual_name() for c in app.core4_containers]))
            print("core4: serving on %s" % self.url, flush=True)
            started = now()
            heartbeat = asyncio.ensure_future(self._heartbeat(
                context, started))
            await self._stop.wait()
            heartbeat.cancel()
            server.stop()
            await server.close_all_connections()
        finally:
            for each in self.children:
                each.stop()
            try:
                await asyncio.get_running_loop().run_in_executor(
                    context.executor, unregister, context.system,
                    self.identifier)
            except Exception as exc:
                log.error("cannot unregister %s: %s", self.identifier, exc)
            context.close()
            for sock in sockets:
                sock.close()
            log.info("app server %s stopped", self.identifier)

    async def _heartbeat(self, context, started):
        """Renew the heartbeat; stop when a halt is requested."""
        loop = asyncio.get_running_loop()
        interval = float(self.config.daemon.heartbeat)
        while not self._stop.is_set():
            try:
                halted = await loop.run_in_executor(
                    context.executor, self._beat, context, started)
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
