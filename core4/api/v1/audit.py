"""The audit trail: who enqueued, killed, restarted or removed a job,
changed a user or role, or the maintenance mode, or asked the daemons to
halt (the events of channel ``audit``, see
:func:`core4.queue.events.audit`); administrators only."""

import math

from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler
from core4.api.v1.job import time_span
from core4.mongo import count
from core4.queue import events

#: the arguments ``GET /audit`` understands
ARGUMENTS = ("page", "per_page", "user", "action", "since", "until")


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
                ", ".join(sorted(unknown)), ", ".join(ARGUMENTS)))
        config = self.context.config.api
        page = self.get_argument("page", 0, as_type=int)
        per_page = self.get_argument("per_page", int(config.per_page),
                                     as_type=int)
        if page < 0:
            raise ApiError(400, "page must be 0 or more")
        if not 1 <= per_page <= int(config.max_per_page):
            raise ApiError(400, "per_page must be 1 to %d" % int(
                config.max_per_page))
        query = self._query()
        docs, total = await self.run(self._page, query, page, per_page)
        self.reply([record(doc) for doc in docs], page=page,
                   per_page=per_page, total_count=total, count=len(docs),
                   page_count=math.ceil(total / per_page))

    def _query(self):
        query = {"channel": events.AUDIT}
        user = self.get_argument("user", None, as_type=str)
        if user:
            query["author"] = user
        action = self.get_argument("action", None, as_type=str)
        if action:
            if action not in events.AUDIT_ACTIONS:
                raise ApiError(400, "unknown action %r (one of %s)" % (
                    action, ", ".join(events.AUDIT_ACTIONS)))
            query["name"] = action
        span = time_span(self)
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
