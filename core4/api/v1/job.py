"""The job API: enqueue, list, detail, kill, restart and remove.

Reading a job needs ``job://<name>/r`` (or ``/x``), changing it
``job://<name>/x``; others see it masked as ``UnauthorizedJob``.
"""

import datetime
import math
import re
import time

from bson import ObjectId

from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler
from core4.api.v1 import jobdoc
from core4.mongo import from_datetime
from core4.queue import states

ID = r"([0-9a-fA-F]{24})"


def _state_filter(values):
    wanted = []
    for value in values:
        wanted.extend(part for part in value.split(",") if part)
    unknown = [value for value in wanted if value not in states.ALL]
    if unknown:
        raise ApiError(400, "unknown state %r (one of %s)" % (
            unknown[0], ", ".join(states.ALL)))
    return wanted


class JobHandler(CoreRequestHandler):
    """``GET /job``: the job listing; ``POST /job``: enqueue a job."""

    access = "user"

    async def get(self):
        """Page through the queue (or the journal) with a fixed set of
        filters: state, name (prefix), user, since/until (enqueued)."""
        config = self.context.config.api
        page = self.get_argument("page", 0, as_type=int)
        per_page = self.get_argument("per_page", int(config.per_page),
                                     as_type=int)
        if page < 0:
            raise ApiError(400, "page must be 0 or more")
        if not 1 <= per_page <= int(config.max_per_page):
            raise ApiError(400, "per_page must be 1 to %d" % int(
                config.max_per_page))
        source = self.get_argument("source", "queue", as_type=str)
        if source not in ("queue", "journal"):
            raise ApiError(400, "source must be queue or journal")
        sort = self.get_argument("sort", "_id", as_type=str)
        direction = -1 if sort.startswith("-") else 1
        sort = sort.lstrip("-")
        if sort not in jobdoc.SORT_FIELDS:
            raise ApiError(400, "cannot sort by %r (one of %s)" % (
                sort, ", ".join(jobdoc.SORT_FIELDS)))
        query = self._query()
        docs, total = await self.run(self._page, source, query,
                                     [(sort, direction)], page, per_page)
        at = time.time()
        self.reply([jobdoc.visible(doc, self.permissions, at)
                    for doc in docs], page=page, per_page=per_page,
                   total_count=total, count=len(docs),
                   page_count=math.ceil(total / per_page))

    def _query(self):
        query = {}
        if "state" in self.argument_names():
            value = self.get_argument("state", as_type=None)
            values = value if isinstance(value, list) else (
                self.get_arguments("state") or [value])
            if not all(isinstance(v, str) for v in values):
                raise ApiError(400, "state must be a state name or a list")
            query["state"] = {"$in": _state_filter(values)}
        name = self.get_argument("name", None, as_type=str)
        if name:
            query["name"] = {"$regex": "^" + re.escape(name)}
        user = self.get_argument("user", None, as_type=str)
        if user:
            query["enqueued.username"] = user
        since = self.get_argument("since", None, as_type=datetime.datetime)
        until = self.get_argument("until", None, as_type=datetime.datetime)
        if since or until:
            span = {}
            if since:
                span["$gte"] = from_datetime(since)
            if until:
                span["$lt"] = from_datetime(until)
            query["enqueued.at"] = span
        return query

    def _page(self, source, query, sort, page, per_page):
        collection = getattr(self.context.system, source)
        total = collection.count_documents(query)
        docs = list(collection.find(query).sort(sort + [("_id", 1)]).skip(
            page * per_page).limit(per_page))
        return docs, total

    async def post(self):
        """Enqueue ``{qual_name, args}``; answer the new job's ``_id``."""
        unknown = self.argument_names() - {"qual_name", "args"}
        if unknown:
            raise ApiError(400, "unknown argument(s): %s (send qual_name "
                           "and args)" % ", ".join(sorted(unknown)))
        name = self.get_argument("qual_name", as_type=str)
        args = self.get_argument("args", {}, as_type=dict)
        if not self.permissions.can_execute_job(name):
            raise ApiError(403, "%s may not execute %s" % (
                self.user["name"], name))
        from core4.project.remote import enqueue_as
        _id = await self.run(enqueue_as, self.context.queue, name,
                             self.user["name"], {"args": args})
        doc = await self.run(self.context.queue.detail, _id)
        self.reply(jobdoc.present(doc or {"_id": _id}), code=201)


class JobListHandler(CoreRequestHandler):
    """``GET /job/list``: the valid jobs of the registry the user may
    execute (``search`` with ``*`` and ``?`` wildcards)."""

    access = "user"

    async def get(self):
        """List enqueueable jobs."""
        search = self.get_argument("search", None, as_type=str)
        query = {"valid": True}
        if search:
            pattern = re.escape(search).replace(r"\*", ".*").replace(
                r"\?", ".")
            query["name"] = {"$regex": "^" + pattern + "$", "$options": "i"}
        docs = await self.run(lambda: list(
            self.context.system.job.find(query).sort("name", 1)))
        self.reply([{key: doc.get(key) for key in (
            "name", "project", "author", "doc", "schedule", "tag")}
            for doc in docs if self.permissions.can_execute_job(
                doc["name"])])


class JobMixin:
    """Finding a job and checking permissions for it."""

    async def job(self, _id, execute=False, queued=False):
        """Return the job ``_id`` (queue, else journal); 404 if unknown,
        403 without permission."""
        doc = await self.run(self.context.queue.detail, ObjectId(_id))
        if doc is None:
            raise ApiError(404, "job %s not found" % _id)
        if queued and doc.get("journaled"):
            raise ApiError(404, "job %s is no longer in the queue" % _id)
        name = doc.get("name", "")
        allowed = (self.permissions.can_execute_job(name) if execute
                   else self.permissions.can_read_job(name))
        if not allowed:
            raise ApiError(403, "%s may not %s job %s" % (
                self.user["name"], "execute" if execute else "read", _id))
        return doc


class JobDetailHandler(JobMixin, CoreRequestHandler):
    """``GET /job/<id>``: one job (queue or journal);
    ``DELETE /job/<id>``: remove it."""

    access = "user"

    async def get(self, _id):
        """Answer the job document."""
        self.reply(jobdoc.present(await self.job(_id)))

    async def delete(self, _id):
        """Remove the job (a running job is killed first)."""
        await self.job(_id, execute=True, queued=True)
        if not await self.run(self.context.queue.remove, ObjectId(_id)):
            raise ApiError(409, "job %s cannot be removed now" % _id)
        self.reply({"_id": _id, "removed": True})


class JobActionHandler(JobMixin, CoreRequestHandler):
    """``PUT /job/<id>/kill`` and ``PUT /job/<id>/restart`` (the rule's
    ``action``)."""

    access = "user"
    action = None

    async def put(self, _id):
        """Kill or restart the job."""
        doc = await self.job(_id, execute=True, queued=True)
        queue = self.context.queue
        if self.action == "kill":
            if not await self.run(queue.kill, ObjectId(_id)):
                raise ApiError(409, "job %s is %s: nothing to kill" % (
                    _id, doc["state"]))
            self.reply({"_id": _id, "killed": True})
            return
        new_id = await self.run(queue.restart, ObjectId(_id))
        if new_id is None:
            raise ApiError(409, "job %s is %s: it cannot be restarted" % (
                _id, doc["state"]))
        self.reply({"_id": _id, "restarted": True, "new_id": new_id})
