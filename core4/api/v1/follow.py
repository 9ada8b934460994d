"""A job's log and output, and following a job live as server-sent
events."""

import asyncio
import datetime
import time

import tornado.iostream
from bson import ObjectId

from core4.api import auth, envelope
from core4.api.handler import CoreRequestHandler
from core4.api.v1 import jobdoc
from core4.api.v1.contract.jobs import LIMIT
from core4.api.v1.job import JobMixin
from core4.logger import job_records
from core4.queue import states

LOG_FIELDS = ("_id", "created", "level", "levelno", "message", "qual_name",
              "identifier", "hostname", "exception")
#: seconds a log record may reach sys_log after a later one (a job's
#: records travel through its worker's forwarder): each poll looks back
#: this far and skips the records already sent
LATE_RECORDS = 10.0
#: log records read at once
READ = 1000


def _aware(value):
    """A stored ``created`` as an aware UTC datetime."""
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


def log_record(doc):
    """Return a ``sys_log`` record as the API shows it."""
    return {key: doc.get(key) for key in LOG_FIELDS if key in doc}


class JobLogHandler(JobMixin, CoreRequestHandler):
    """``GET /job/<id>/log``: the job's log records (the latest
    ``limit``, oldest first)."""

    access = "user"

    async def get(self, _id):
        """Answer the log records."""
        limit = self.param(LIMIT)
        await self.job(_id)
        docs = await self.run(job_records, self.context.system,
                              ObjectId(_id), limit)
        self.reply([log_record(doc) for doc in docs])


class JobStdoutHandler(JobMixin, CoreRequestHandler):
    """``GET /job/<id>/stdout``: the job's captured output as text."""

    access = "user"

    async def get(self, _id):
        """Answer the output (``data`` is a string, empty if none)."""
        await self.job(_id)
        out = await self.run(self.context.queue.stdout, ObjectId(_id))
        if isinstance(out, bytes):
            out = out.decode("utf-8", errors="replace")
        self.reply(out or "")


class JobFollowHandler(JobMixin, CoreRequestHandler):
    """``GET /job/<id>/follow``: server-sent events until the job ends.

    Events: ``state`` (the job document, whenever it changes), ``log``
    (each new log record, with the record's ``_id`` as event id) and
    finally ``close`` (the final state). A comment line every 15 seconds
    keeps idle connections open. A client that reconnects with
    ``Last-Event-ID`` gets only the records after that one.

    Every :data:`~core4.api.auth.RECHECK` seconds the stream checks its
    login again (:class:`~core4.api.auth.Recheck`) and the permission to
    read the job: when either no longer holds, it ends with ``close``
    whose ``revoked`` names why.
    """

    access = "user"

    async def get(self, _id):
        """Stream the job's state and log."""
        doc = await self.job(_id)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = False
        config = self.context.config.api
        interval = float(config.follow_interval)
        deadline = time.monotonic() + float(config.follow_timeout)
        seen, last, last_state = set(), None, None
        kept_alive = time.monotonic()
        oid = ObjectId(_id)
        login = auth.Recheck(self)
        resume = self.request.headers.get("Last-Event-ID", "")
        if ObjectId.is_valid(resume):
            last = ObjectId(resume)
            seen = await self.run(self._sent_up_to, oid, last)
        try:
            while not self._gone:
                snapshot = self._snapshot(doc)
                if snapshot != last_state:
                    await self.event("state", jobdoc.present(doc))
                    last_state = snapshot
                more, late = True, True
                while more and not self._gone:
                    records, last, more = await self.run(
                        self._new_records, oid, last, seen, late)
                    for record in records:
                        await self.event("log", log_record(record),
                                         event_id=record["_id"])
                    late = False
                final = doc.get("state") in states.FINAL or doc.get(
                    "journaled")
                if final or time.monotonic() > deadline:
                    await self.event("close", {
                        "_id": _id, "state": doc.get("state"),
                        "timeout": not final})
                    break
                if time.monotonic() - kept_alive > 15:
                    self.write(": keep-alive\n\n")
                    await self.flush()
                    kept_alive = time.monotonic()
                await asyncio.sleep(interval)
                revoked = await self._revoked(login, doc)
                if revoked:
                    await self.event("close", {
                        "_id": _id, "state": doc.get("state"),
                        "timeout": False, "revoked": revoked})
                    break
                doc = await self.run(self.context.queue.detail, oid)
                if doc is None:
                    await self.event("close", {"_id": _id, "state": None,
                                               "timeout": False})
                    break
        except tornado.iostream.StreamClosedError:
            return
        self.finish()

    async def _revoked(self, login, doc):
        """Why the stream must end (its login or the permission to read
        the job no longer holds), else None."""
        revoked = await login.revoked()
        if revoked is None and not self.permissions.can_read_job(
                doc.get("name", "")):
            revoked = "%s may no longer read job %s" % (
                self.user["name"], doc["_id"])
        return revoked

    @staticmethod
    def _snapshot(doc):
        return envelope.dumps({key: doc.get(key) for key in (
            "state", "prog", "attempts_left", "trial", "killed_at",
            "removed_at", "zombie_at", "wall_at", "last_error",
            "locked", "finished_at", "journaled")})

    def _new_records(self, oid, last, seen, late=True):
        """Return ``(records not sent yet, new last, more)``; ``more`` is
        true if there may be more new records than one read returns.

        ``last`` is the highest record ``_id`` sent so far. A record's
        ``_id`` is made when it is logged, so the records after ``last``
        are new; with ``late``, also those logged up to
        :data:`LATE_RECORDS` seconds before it that arrived late (e.g. the
        DEBUG records a failing job writes at its end). Queries are on
        ``_id``, not on ``created``: NX-27017 cannot compare datetimes.
        """
        log = self.context.system.log
        query = {"identifier": str(oid)}
        docs = []
        if last is not None and late:
            floor = ObjectId.from_datetime(
                last.generation_time - datetime.timedelta(
                    seconds=LATE_RECORDS))
            docs = list(log.find(dict(query, _id={
                "$gte": floor, "$lt": last})).sort("_id", 1).limit(READ))
            seen.intersection_update(
                [_id for _id in seen if _id >= floor])
        if last is not None:
            query["_id"] = {"$gt": last}
        new = list(log.find(query).sort("_id", 1).limit(READ))
        if new:
            last = new[-1]["_id"]
        fresh = [doc for doc in docs + new if doc["_id"] not in seen]
        seen.update(doc["_id"] for doc in fresh)
        fresh.sort(key=lambda doc: (_aware(doc["created"]), doc["_id"]))
        return fresh, last, len(new) == READ

    def _sent_up_to(self, oid, last):
        """Return the ids of the records a client that saw ``last`` has
        (those a late read could send again)."""
        floor = ObjectId.from_datetime(last.generation_time - datetime.
                                       timedelta(seconds=LATE_RECORDS))
        return {doc["_id"] for doc in self.context.system.log.find(
            {"identifier": str(oid), "_id": {"$gte": floor, "$lte": last}},
            {"_id": 1})}

    async def event(self, name, data, event_id=None):
        """Send one server-sent event (with an ``id:`` line if given)."""
        head = "id: %s\n" % event_id if event_id is not None else ""
        self.write("%sevent: %s\ndata: %s\n\n" % (head, name,
                                                    envelope.dumps(data)))
        await self.flush()

    def on_connection_close(self):
        """Stop following when the client goes away."""
        self._gone = True
