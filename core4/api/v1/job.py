"""The job API: enqueue, list, detail, kill, restart and remove.

Reading a job needs ``job://<name>/r`` (or ``/x``), changing it
``job://<name>/x``; others see it masked as ``UnauthorizedJob`` (only
its ``_id`` and ``state``). Filters on anything else, and sorting by
anything else than these and the enqueue time, apply only to the jobs
the user may read, and so do the counts of such a listing: a masked job
never matches them.
"""

import fnmatch
import math
import re

from bson import ObjectId

from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler, database_timeout
from core4.api.v1 import jobdoc
from core4.api.v1.contract import jobs as contract
from core4.api.v1.contract.common import PAGE, PER_PAGE
from core4.mongo import count, from_datetime, now
from core4.queue import states

ID = r"([0-9a-fA-F]{24})"
#: states a job can be restarted from
RESTARTABLE = states.WAITING + states.STOPPED
#: the fields of a job everyone sees (see :func:`jobdoc.masked`)
VISIBLE_FIELDS = ("_id", "state")
#: the fields a listing with masked jobs may be sorted by: the visible
#: ones and the enqueue time (the _id of a masked job tells it anyway)
VISIBLE_ORDER = VISIBLE_FIELDS + ("enqueued.at",)


def time_span(handler, since=contract.SINCE, until=contract.UNTIL):
    """The ``since``/``until`` arguments of ``handler`` (the parameters
    ``since`` and ``until``) as a query range (``{"$gte": since, "$lt":
    until}``), or None if neither is given."""
    since = handler.param(since)
    until = handler.param(until)
    if since and until and since >= until:
        raise ApiError(400, "since must be before until")
    span = {}
    if since:
        span["$gte"] = from_datetime(since)
    if until:
        span["$lt"] = from_datetime(until)
    return span or None


def _sort(value):
    """Return ``(field, direction)`` of ``field``, ``+field`` or ``-field``
    (a ``+`` sent unencoded in a query arrives as a space)."""
    field, direction = value, 1
    if value[:1] == "-":
        field, direction = value[1:], -1
    elif value[:1] in ("+", " "):
        field = value[1:]
    if field not in contract.SORT_FIELDS:
        raise ApiError(400, "cannot sort by %r (one of %s, with - for "
                       "descending)" % (value, ", ".join(
                           contract.SORT_FIELDS)), field="sort")
    return field, direction


def _state_filter(values):
    """Return the states of ``?state=a&state=b`` or ``?state=a,b``."""
    wanted = []
    for value in values:
        wanted.extend(part.strip() for part in value.split(",")
                      if part.strip())
    known = contract.STATE["enum"]
    unknown = [value for value in wanted if value not in known]
    if unknown or not wanted:
        raise ApiError(400, "unknown state %r (one of %s)" % (
            unknown[0] if unknown else "", ", ".join(known)), field="state")
    return wanted


def wildcard_match(search):
    """Return a function telling whether a job name matches ``search``
    (``*`` any characters, ``?`` one, case-insensitive; checked by
    :data:`~core4.api.v1.contract.jobs.SEARCH`: not too long, not too
    many runs of wildcards). The match is linear in the name: Python's
    ``fnmatch`` matches each ``*`` atomically (no backtracking)."""
    # only * and ? are wildcards: [ stands for itself
    pattern = fnmatch.translate(search.replace("[", "[[]"))
    return re.compile(pattern, re.IGNORECASE).match


def readable(collection, query, sort, permissions):
    """Return the listing ``query`` (of :meth:`JobHandler._query`)
    restricted to the jobs ``permissions`` may read if it filters or sorts
    by a field a masked job hides (blocking). The job names of
    ``collection`` are read and checked here (the ``name`` prefix too), so
    neither the filters nor a count ever run on a job the user may not
    read."""
    hidden = [key for key in query if key not in VISIBLE_FIELDS]
    if not hidden and sort[0][0] in VISIBLE_ORDER:
        return query  # masked jobs included, as their _id and state
    if permissions.admin:
        return query
    prefix = query.get("name")  # our own escaped, anchored prefix
    prefix = re.compile(prefix["$regex"]) if prefix else None
    names = sorted(
        name for name in collection.distinct("name")
        if isinstance(name, str) and permissions.can_read_job(name)
        and (prefix is None or prefix.match(name)))
    return dict(query, name={"$in": names})


class JobHandler(CoreRequestHandler):
    """``GET /job``: the job listing; ``POST /job``: enqueue a job."""

    access = "user"

    async def get(self):
        """Page through the queue (or the journal) with a fixed set of
        filters: state, name (prefix), user, since/until (enqueued)."""
        source, query, sort, page, per_page = self.listing_arguments()
        docs, total = await self.run(self.page_of, source, query, sort, page,
                                     per_page)
        at = now()
        self.reply([jobdoc.visible(doc, self.permissions, at)
                    for doc in docs], page=page, per_page=per_page,
                   total_count=total, count=len(docs),
                   page_count=math.ceil(total / per_page))

    def listing_arguments(self):
        """Return ``(source, query, sort, page, per_page)`` of the
        request's listing arguments, or answer 400 naming the bad one."""
        page = self.param(PAGE)
        per_page = self.param(PER_PAGE)
        source = self.param(contract.SOURCE)
        sort = [_sort(self.param(contract.SORT))]
        return source, self._query(), sort, page, per_page

    def _query(self):
        query = {}
        if "state" in self.argument_names():
            value = self.get_argument("state", as_type=None)
            values = value if isinstance(value, list) else (
                self.get_arguments("state") or [value])
            if not all(isinstance(v, str) for v in values):
                raise ApiError(400, "state must be a state name or a list",
                               field="state")
            query["state"] = {"$in": _state_filter(values)}
        name = self.param(contract.NAME)
        if name:  # a prefix: linear, and anchored for an index
            query["name"] = {"$regex": "^" + re.escape(name)}
        user = self.param(contract.USER)
        if user:
            query["enqueued.username"] = user
        span = time_span(self)
        if span:
            query["enqueued.at"] = span
        return query

    def page_of(self, source, query, sort, page, per_page):
        """Return ``(one page of documents, total)`` (blocking)."""
        collection = getattr(self.context.system, source)
        query = readable(collection, query, sort, self.permissions)
        total = count(collection, query)
        if page * per_page >= total:
            return [], total  # past the end (also a page too big to skip)
        if sort[-1][0] != "_id":
            sort = sort + [("_id", 1)]  # a stable order of equal values
        docs = list(collection.find(query).sort(sort).skip(
            page * per_page).limit(per_page))
        return docs, total

    async def post(self):
        """Enqueue ``{qual_name, args}``; answer the job as enqueued
        (``pending``, even if a worker claimed it meanwhile)."""
        fields = self.body(contract.ENQUEUE)
        name, args = fields["qual_name"], fields.get("args") or {}
        self.check_execute(name)
        from core4.queue.remote import enqueue_as
        enqueued = []

        def check(job):
            self.check_execute(job.name)
            enqueued.append(job)
        # (a job not registered is validated in a child process meanwhile)
        _id = await self.run_within(
            database_timeout(self.context.config), enqueue_as,
            self.context.queue, name, self.user["name"], {"args": args},
            check=check)
        doc = await self.run(self.context.queue.detail, _id)
        if enqueued and (doc is None or doc.get("state") != states.PENDING):
            # claimed already: answer what was enqueued
            doc = dict(enqueued[0].serialise(), trial=0)
        self.reply(jobdoc.present(doc or {"_id": _id}), code=201)

    def check_execute(self, name):
        """403 unless the user may execute the job ``name`` (the name
        asked for, and the name of the class it resolves to: a job is
        stored, read and killed under the class's own name)."""
        if not self.permissions.can_execute_job(name):
            raise ApiError(403, "%s may not execute %s" % (
                self.user["name"], name))


#: the fields of a registered job ``GET /job/list`` answers
LISTED_FIELDS = ("name", "project", "author", "doc", "schedule", "tag")


class JobListHandler(CoreRequestHandler):
    """``GET /job/list``: the valid jobs of the registry the user may
    execute (``search`` with ``*`` and ``?`` wildcards)."""

    access = "user"

    async def get(self):
        """List enqueueable jobs: those the user may execute first, then
        those of them ``search`` matches (no pattern reaches the
        database)."""
        search = self.param(contract.SEARCH)
        matches = wildcard_match(search) if search else None
        query = {"valid": {"$in": [True, 1]}}  # NX may store True as 1
        docs = await self.run(lambda: list(self.context.system.job.find(
            query, dict.fromkeys(LISTED_FIELDS, 1)).sort("name", 1)))
        self.reply([{key: doc.get(key) for key in LISTED_FIELDS}
                    for doc in docs
                    if isinstance(doc.get("name"), str)
                    and self.permissions.can_execute_job(doc["name"])
                    and (matches is None or matches(doc["name"]))])


class JobMixin:
    """Finding a job and checking permissions for it."""

    async def job(self, _id, execute=False, queued=None):
        """Return the job ``_id`` (queue, else journal); 404 if unknown,
        403 without permission; with ``queued`` (the verb of the action,
        e.g. ``"killed"``) 409 if the job is already in the journal."""
        doc = await self.run(self.context.queue.detail, ObjectId(_id))
        if doc is None:
            raise ApiError(404, "job %s not found" % _id)
        name = doc.get("name", "")
        allowed = (self.permissions.can_execute_job(name) if execute
                   else self.permissions.can_read_job(name))
        if not allowed:
            raise ApiError(403, "%s may not %s job %s" % (
                self.user["name"], "execute" if execute else "read", _id))
        if queued and doc.get("journaled"):
            child = (doc.get("enqueued") or {}).get("child_id")
            raise ApiError(409, "job %s is %s%s and no longer in the queue: "
                           "it cannot be %s" % (
                               _id, doc.get("state"),
                               " (removed)" if doc.get("removed_at") else
                               " (restarted as %s)" % child if child else "",
                               queued))
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
        await self.job(_id, execute=True, queued="removed")
        if not await self.run(self.context.queue.remove, ObjectId(_id),
                              by=self.user["name"]):
            raise ApiError(409, "job %s cannot be removed now" % _id)
        self.reply({"_id": _id, "removed": True})


class JobActionHandler(JobMixin, CoreRequestHandler):
    """``PUT /job/<id>/kill`` and ``PUT /job/<id>/restart`` (the rule's
    ``action``)."""

    access = "user"
    action = None

    async def put(self, _id):
        """Kill or restart the job."""
        doc = await self.job(_id, execute=True, queued=(
            "killed" if self.action == "kill" else "restarted"))
        queue = self.context.queue
        if self.action == "kill":
            if not await self.run(queue.kill, ObjectId(_id),
                                  by=self.user["name"]):
                doc = await self.run(queue.detail, ObjectId(_id)) or doc
                if doc.get("state") == states.RUNNING and doc.get(
                        "killed_at"):
                    raise ApiError(409, "job %s is running and already "
                                   "asked to stop" % _id)
                raise ApiError(409, "job %s is %s: nothing to kill" % (
                    _id, doc.get("state")))
            self.reply({"_id": _id, "killed": True})
            return
        new_id = await self.run(queue.restart, ObjectId(_id),
                                by=self.user["name"])
        if new_id is None:
            doc = await self.run(queue.detail, ObjectId(_id)) or doc
            raise ApiError(409, "job %s is %s: only %s jobs can be "
                           "restarted" % (_id, doc.get("state"),
                                          ", ".join(RESTARTABLE)))
        self.reply({"_id": _id, "restarted": True, "new_id": new_id})
