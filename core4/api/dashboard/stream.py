"""The live queue of the dashboard as server-sent events.

``GET /_dashboard/stream/queue`` takes the filters and paging arguments of
``GET /core4/api/v1/job`` (state, name, user, since, until, sort, page,
per_page, source) and sends, every ``interval`` seconds, one ``queue``
event::

    {"at": <ISO 8601 time>, "total": <jobs in the queue>,
     "state": {<state>: <jobs>}, "jobs": [<job documents>],
     "page": .., "per_page": .., "page_count": .., "total_count": ..,
     "count": ..}

Job documents look as in the job API (names the user may not read are
masked as ``UnauthorizedJob``). After ``lifetime`` seconds the server ends
the stream and the browser reconnects (with a renewed login cookie).

Every :data:`~core4.api.auth.RECHECK` seconds the stream checks its login
again (:class:`~core4.api.auth.Recheck`: the masks follow the user's
current permissions); when it no longer holds (the user was deleted,
renamed or deactivated, its password changed, its token expired), the
stream sends one ``revoked`` event, ``{"message": ...}``, and ends.

While the database cannot be reached the stream stays open and sends an
``unavailable`` event instead, ``{"code": 503, "message": ...}``, once per
failed attempt (each waits at most the request's database timeout); the
``queue`` events go on when the database is back.
"""

import asyncio
import math
import time

import tornado.iostream

from core4.api import auth, envelope
from core4.api.errors import status_of
from core4.api.v1 import jobdoc
from core4.api.v1.job import JobHandler
from core4.api.dashboard.handler import DashboardHandler
from core4.mongo import count_by, now
from core4.queue import states


class QueueStreamHandler(DashboardHandler):
    """Push the queue counts and one page of the job listing."""

    public = False
    access = "user"
    #: seconds between events and the most a stream lasts (rule kwargs)
    interval = 1.0
    lifetime = 600.0

    # the filters and paging are exactly those of GET /job (same
    # validation, same messages)
    listing_arguments = JobHandler.listing_arguments
    _query = JobHandler._query
    page_of = JobHandler.page_of

    async def get(self):
        """Stream ``queue`` events until the client leaves or the
        lifetime ends."""
        source, query, sort, page, per_page = self.listing_arguments()
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = False
        deadline = time.monotonic() + float(self.lifetime)
        login = auth.Recheck(self)
        try:
            self.write("retry: 1000\n\n")
            while not self._gone and time.monotonic() < deadline:
                try:
                    revoked = await login.revoked()
                    if revoked:
                        self.write("event: revoked\ndata: %s\n\n" % (
                            envelope.dumps({"message": revoked})))
                        break
                    data = await self.run(self._snapshot, source, query,
                                          sort, page, per_page)
                except Exception as exc:
                    status, message = status_of(exc)
                    if status != 503:
                        raise
                    self.write("event: unavailable\ndata: %s\n\n" % (
                        envelope.dumps({"code": status,
                                        "message": message})))
                else:
                    self.write("event: queue\ndata: %s\n\n" % (
                        envelope.dumps(data)))
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
        docs, total = self.page_of(source, query, sort, page, per_page)
        at = now()
        return {"at": at, "total": sum(counts.values()), "state": counts,
                "jobs": [jobdoc.visible(doc, self.permissions, at)
                         for doc in docs],
                "page": page, "per_page": per_page,
                "page_count": math.ceil(total / per_page),
                "total_count": total, "count": len(docs)}

    def on_connection_close(self):
        """Stop when the client goes away."""
        self._gone = True
