"""The live queue of the dashboard as server-sent events.

``GET /_dashboard/stream/queue`` takes the filters and paging arguments of
``GET /core4/api/v1/job`` (state, name, user, since, until, sort, page,
per_page, source) and sends, every ``interval`` seconds, one ``queue``
event::

    {"at": <epoch seconds>, "total": <jobs in the queue>,
     "state": {<state>: <jobs>}, "jobs": [<job documents>],
     "page": .., "per_page": .., "page_count": .., "total_count": ..,
     "count": ..}

Job documents look as in the job API (names the user may not read are
masked as ``UnauthorizedJob``). After ``lifetime`` seconds the server ends
the stream and the browser reconnects (with a renewed login cookie).
"""

import asyncio
import math
import time

import tornado.iostream

from core4.api import envelope
from core4.api.errors import ApiError
from core4.api.v1 import jobdoc
from core4.api.v1.job import JobHandler
from core4.api.dashboard.handler import DashboardHandler
from core4.mongo import count, count_by
from core4.queue import states


class QueueStreamHandler(DashboardHandler):
    """Push the queue counts and one page of the job listing."""

    public = False
    access = "user"
    #: seconds between events and the most a stream lasts (rule kwargs)
    interval = 1.0
    lifetime = 600.0

    # the filters are exactly those of GET /job (same validation, same
    # messages): use its query builder
    _query = JobHandler._query

    def _arguments(self):
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
        order = [(sort, direction)]
        if sort != "_id":
            order.append(("_id", 1))  # a stable order of equal values
        return source, self._query(), order, page, per_page

    async def get(self):
        """Stream ``queue`` events until the client leaves or the
        lifetime ends."""
        source, query, sort, page, per_page = self._arguments()
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = False
        deadline = time.monotonic() + float(self.lifetime)
        try:
            self.write("retry: 1000\n\n")
            while not self._gone and time.monotonic() < deadline:
                data = await self.run(self._snapshot, source, query, sort,
                                      page, per_page)
                self.write("event: queue\ndata: %s\n\n" % envelope.dumps(
                    data))
                await self.flush()
                await asyncio.sleep(float(self.interval))
        except tornado.iostream.StreamClosedError:
            return
        self.finish()

    def _snapshot(self, source, query, sort, page, per_page):
        system = self.context.system
        counts = {state: 0 for state in states.ALL}
        for (state,), number in count_by(system.queue, ["state"]).items():
            counts[state] = number
        collection = getattr(system, source)
        total = count(collection, query)
        docs = [] if page * per_page >= total else list(
            collection.find(query).sort(sort).skip(page * per_page).limit(
                per_page))
        at = time.time()
        return {"at": at, "total": sum(counts.values()), "state": counts,
                "jobs": [jobdoc.visible(doc, self.permissions, at)
                         for doc in docs],
                "page": page, "per_page": per_page,
                "page_count": math.ceil(total / per_page),
                "total_count": total, "count": len(docs)}

    def on_connection_close(self):
        """Stop when the client goes away."""
        self._gone = True
