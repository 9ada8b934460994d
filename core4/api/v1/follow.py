"""A job's log and output, and following a job live as server-sent
events."""

import asyncio
import datetime
import time

import tornado.iostream
from bson import ObjectId

from core4.api import envelope
from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler
from core4.api.v1 import jobdoc
from core4.api.v1.job import JobMixin
from core4.logger import job_records
from core4.queue import states

LOG_FIELDS = ("_id", "created", "level", "levelno", "message", "qual_name",
              "identifier", "hostname", "exception")


def log_record(doc):
    """Return a ``sys_log`` record as the API shows it."""
    return {key: doc.get(key) for key in LOG_FIELDS if key in doc}


class JobLogHandler(JobMixin, CoreRequestHandler):
    """``GET /job/<id>/log``: the job's log records (the latest
    ``limit``, oldest first)."""

    access = "user"

    async def get(self, _id):
        """Answer the log records."""
        await self.job(_id)
        limit = self.get_argument("limit", 1000, as_type=int)
        if not 1 <= limit <= 10000:
            raise ApiError(400, "limit must be 1 to 10000")
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
    (each new log record) and finally ``close`` (the final state). A
    comment line every 15 seconds keeps idle connections open.
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
        seen, since, last_state, kept_alive = set(), None, None, 0.0
        oid = ObjectId(_id)
        try:
            while not self._gone:
                snapshot = self._snapshot(doc)
                if snapshot != last_state:
                    await self.event("state", jobdoc.present(doc))
                    last_state = snapshot
                records, since = await self.run(
                    self._new_records, oid, since, seen)
                for record in records:
                    await self.event("log", log_record(record))
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
                doc = await self.run(self.context.queue.detail, oid)
                if doc is None:
                    await self.event("close", {"_id": _id, "state": None,
                                               "timeout": False})
                    break
        except tornado.iostream.StreamClosedError:
            return
        self.finish()

    @staticmethod
    def _snapshot(doc):
        return envelope.dumps({key: doc.get(key) for key in (
            "state", "prog", "attempts_left", "trial", "killed_at",
            "removed_at", "zombie_at", "wall_at", "last_error",
            "locked", "finished_at", "journaled")})

    def _new_records(self, oid, since, seen):
        query = {"identifier": str(oid)}
        if since is not None:
            query["created"] = {"$gte": since}
        docs = list(self.context.system.log.find(query).sort(
            [("created", 1), ("_id", 1)]).limit(1000))
        fresh = [doc for doc in docs if doc["_id"] not in seen]
        for doc in fresh:
            seen.add(doc["_id"])
        if docs:
            since = docs[-1]["created"]
            if isinstance(since, datetime.datetime) and since.tzinfo is None:
                since = since.replace(tzinfo=datetime.timezone.utc)
        return fresh, since

    async def event(self, name, data):
        """Send one server-sent event."""
        self.write("event: %s\ndata: %s\n\n" % (name, envelope.dumps(data)))
        await self.flush()

    def on_connection_close(self):
        """Stop following when the client goes away."""
        self._gone = True
