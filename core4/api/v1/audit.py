"""The audit trail: who enqueued, killed, restarted or removed a job,
changed a user or role, or the maintenance mode, or asked the daemons to
halt (the events of channel ``audit``, see
:func:`core4.queue.events.audit`); administrators only."""

import math

from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler
from core4.api.v1.contract.system import AUDIT
from core4.api.v1.job import time_span
from core4.mongo import count
from core4.queue import events

#: the parameters of ``GET /audit``
PAGE, PER_PAGE, USER, ACTION, SINCE, UNTIL = AUDIT
#: the arguments ``GET /audit`` understands
ARGUMENTS = tuple(param.name for param in AUDIT)


def record(doc):
    """Return the audit record an API client sees of an audit event:
    ``{_id, created, user, action, target, hostname}``."""
    return {"_id": doc["_id"], "created": doc.get("created"),
            "user": doc.get("author"), "action": doc.get("name"),
            "target": doc.get("data") or {}, "hostname": doc.get("hostname")}


class AuditHandler(CoreRequestHandler):
    """``GET /audit``: the audit trail, newest first, a page at a time,
    filtered by ``user``, ``action`` and ``since``/``until``."""

    access = "admin"

    async def get(self):
        """Answer one page of audit records ``[{_id, created, user,
        action, target, hostname}]``."""
        unknown = self.argument_names() - set(ARGUMENTS)
        if unknown:
            raise ApiError(400, "unknown argument(s): %s (send %s)" % (
                ", ".join(sorted(unknown)), ", ".join(ARGUMENTS)),
                field=sorted(unknown)[0])
        page = self.param(PAGE)
        per_page = self.param(PER_PAGE)
        query = self._query()
        docs, total = await self.run(self._page, query, page, per_page)
        self.reply([record(doc) for doc in docs], page=page,
                   per_page=per_page, total_count=total, count=len(docs),
                   page_count=math.ceil(total / per_page))

    def _query(self):
        query = {"channel": events.AUDIT}
        user = self.param(USER)
        if user:
            query["author"] = user
        action = self.param(ACTION)
        if action:
            query["name"] = action
        span = time_span(self, SINCE, UNTIL)
        if span:
            query["created"] = span
        return query

    def _page(self, query, page, per_page):
        """Return ``(one page of events, total)`` (blocking)."""
        collection = self.context.system.event
        total = count(collection, query)
        if page * per_page >= total:
            return [], total
        docs = list(collection.find(query).sort(
            [("created", -1), ("_id", -1)]).skip(page * per_page).limit(
                per_page))
        return docs, total
