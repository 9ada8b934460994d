"""Service jobs through the app server (see :mod:`core4.queue.service`).

* ``GET /core4/api/v1/service``: the running services the user may read,
  with where to open them, their health and their owner.
* ``DELETE /core4/api/v1/service/<id>``: stop a service (a kill; the user
  needs to be allowed to execute the job).
* ``/service/<id>/...`` (:class:`ServiceProxyHandler`, in the
  :class:`ServiceContainer`): every request, WebSocket upgrades included,
  relayed to the service behind core4's login. Only the service's owner
  (who enqueued it) and admins may open it, and only while they may read
  the job. core4's own credentials are not passed on; a service's own
  token (a Jupyter server's) is added instead.
"""

import asyncio
import time

import tornado.iostream
import tornado.tcpclient
from bson import ObjectId

from core4.api.container import CoreApiContainer
from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler
from core4.api.proxy import CONNECT_TIMEOUT, ProxyHandler, _reason
from core4.api.v1.job import JobMixin
from core4.mongo import now
from core4.queue import states

#: seconds between two records of a service's use (``service.used_at``)
USED_EVERY = 30.0
#: seconds between checks that the user of an open WebSocket may still
#: open the service
RECHECK_SECONDS = 5.0
#: the fields a service listing shows
LISTED = ("_id", "name", "state", "started_at", "service", "enqueued")


def listed(doc):
    """The listing entry of the running service job ``doc``."""
    service = doc.get("service") or {}
    return {"_id": str(doc["_id"]), "name": doc.get("name"),
            "owner": (doc.get("enqueued") or {}).get("username"),
            "state": doc.get("state"),
            "started_at": doc.get("started_at"),
            "health": service.get("health"),
            "health_at": service.get("health_at"),
            "used_at": service.get("used_at"),
            "path": service.get("prefix")}


class ServiceListHandler(CoreRequestHandler):
    """``GET /service``: running services the user may read."""

    access = "user"
    spec = {"get": {"summary": "running service jobs (path to open, "
                               "health, owner)"}}

    async def get(self):
        """List the running services."""
        def find():
            return list(self.context.queue.sys.queue.find(
                {"state": states.RUNNING, "service.prefix": {"$exists": True}},
                dict.fromkeys(LISTED, 1)).sort("_id", 1))
        docs = await self.run(find)
        self.reply([listed(doc) for doc in docs
                    if self.permissions.can_read_job(doc.get("name", ""))])


class ServiceStopHandler(JobMixin, CoreRequestHandler):
    """``DELETE /service/<id>``: stop a service (kill its job)."""

    access = "user"
    spec = {"delete": {"summary": "stop a running service"}}

    async def delete(self, _id):
        """Stop the service."""
        doc = await self.job(_id, execute=True, queued="stopped")
        if "service" not in doc:
            raise ApiError(404, "job %s is not a service" % _id)
        if not await self.run(self.context.queue.kill, ObjectId(_id),
                              by=self.user["name"]):
            raise ApiError(409, "service %s is %s: nothing to stop" % (
                _id, doc.get("state")))
        self.reply({"_id": _id, "stopped": True})


def may_open(handler, doc):
    """None if the handler's user may open the service ``doc``, else why
    not."""
    if handler.user is None:
        return "login required"
    if not handler.permissions.can_read_job(doc.get("name", "")):
        return "%s may not read %s" % (handler.user["name"], doc.get("name"))
    owner = (doc.get("enqueued") or {}).get("username")
    if owner != handler.user["name"] and not handler.permissions.admin:
        return "service %s belongs to %s" % (doc["_id"], owner)
    return None


class ServiceProxyHandler(ProxyHandler):
    """Relays ``/service/<id>/...`` to the running service ``<id>``."""

    public = False
    access = "user"
    openapi = False
    _used = {}  # job id -> monotonic time its use was last recorded

    async def prepare(self):
        """Log in (core4's credentials), find the service, check the user
        may open it."""
        self._upstream = None
        self._gone = False
        await CoreRequestHandler.prepare(self)
        _id = self.path_args[0]
        doc = await self.run(self._service, ObjectId(_id))
        if doc is None or doc.get("state") != states.RUNNING or \
                not (doc.get("service") or {}).get("port"):
            raise ApiError(404, "no running service %s" % _id)
        refused = may_open(self, doc)
        if refused:
            raise ApiError(403, refused)
        service = doc["service"]
        self.doc = doc
        self.target = "http://%s:%s" % (service["address"], service["port"])
        self.project = "service %s" % _id
        self.token = await self.run(self._token, doc)
        await self.run(self._record_use, doc["_id"])

    async def _parse_body(self):
        """The body is relayed as it is."""

    def _service(self, _id):
        return self.context.queue.sys.queue.find_one(
            {"_id": _id}, {"name": 1, "state": 1, "service": 1,
                           "enqueued": 1})

    def _token(self, doc):
        from core4.queue.service import service_token
        return service_token(doc, self.context.config)

    def _record_use(self, _id):
        mono = time.monotonic()
        if mono - self._used.get(_id, -USED_EVERY) < USED_EVERY:
            return
        self._used[_id] = mono
        self.context.queue.sys.queue.update_one(
            {"_id": _id, "state": states.RUNNING},
            {"$set": {"service.used_at": now()}})

    def _request_headers(self, host, port, body):
        headers = super()._request_headers(host, port, body)
        # core4's credentials are core4's: the service never sees them
        headers.pop("Authorization", None)
        cookies = [part for part in (headers.get("Cookie") or "").split(";")
                   if part.strip() and not part.strip().startswith(
                       "core4_token=")]
        headers.pop("Cookie", None)
        if cookies:
            headers["Cookie"] = ";".join(cookies).strip()
        if self.token:
            headers["Authorization"] = "token %s" % self.token
        return headers

    async def get(self, *args):
        """Relay a GET; a WebSocket upgrade becomes a tunnel."""
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._tunnel()
        return await self._relay(*args)

    async def _tunnel(self):
        host, _, port = self.target.rpartition("//")[2].rpartition(":")
        try:
            upstream = await tornado.tcpclient.TCPClient().connect(
                host, int(port), timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            raise ApiError(502, "%s does not answer: %s" % (
                self.project, _reason(exc)))
        headers = self._request_headers(host, port, b"")
        headers["Connection"] = "Upgrade"
        headers["Upgrade"] = self.request.headers["Upgrade"]
        head = ["%s %s HTTP/1.1" % (self.request.method, self.request.uri)]
        head.extend("%s: %s" % item for item in headers.get_all())
        await upstream.write(("\r\n".join(head) + "\r\n\r\n").encode(
            "latin-1"))
        client = self.detach()
        closed = asyncio.Event()
        tasks = [asyncio.ensure_future(_pipe(client, upstream, closed)),
                 asyncio.ensure_future(_pipe(upstream, client, closed)),
                 asyncio.ensure_future(self._recheck(closed))]
        await closed.wait()
        for stream in (client, upstream):
            stream.close()
        for task in tasks:
            task.cancel()

    async def _recheck(self, closed):
        """End the tunnel once the user's login no longer holds (see
        :class:`core4.api.auth.Recheck`), the user may no longer open the
        service, or it stopped running."""
        from core4.api.auth import Recheck
        login = Recheck(self, RECHECK_SECONDS)
        while not closed.is_set():
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                if await login.revoked():
                    break
                doc = await self.run(self._service, self.doc["_id"])
            except Exception:  # noqa: BLE001 - the database is away
                continue
            if doc is None or doc.get("state") != states.RUNNING:
                break
            if may_open(self, doc) is not None:
                break
            await self.run(self._record_use, doc["_id"])
        closed.set()


async def _pipe(source, target, closed):
    """Copy bytes from ``source`` to ``target`` until one closes."""
    try:
        while True:
            data = await source.read_bytes(65536, partial=True)
            await target.write(data)
    except (tornado.iostream.StreamClosedError, OSError):
        pass
    finally:
        closed.set()


class ServiceContainer(CoreApiContainer):
    """The services' proxy, root ``/service``."""

    root = "/service"
    rules = [
        (r"/([0-9a-f]{24})(?:/.*)?", ServiceProxyHandler),
    ]
