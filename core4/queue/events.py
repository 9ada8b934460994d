"""Events: state changes of jobs and daemons, written to ``sys_event`` for
the API and the dashboard to follow.

``sys_event`` is bounded by a TTL index on ``created`` (``event.ttl``
seconds). A worker collects its events in an :class:`EventBuffer` and
writes them with one ``insert_many`` per loop pass, so events cost no
extra round trip per job. Writing events never breaks what emits them.

The audit trail is the events of channel ``audit`` (see :func:`audit`):
who enqueued, killed, restarted or removed a job, changed a user or role,
or the maintenance mode, or asked the daemons to halt.
"""

import datetime

import pymongo.errors

from core4.base import hostname
from core4.mongo import ensure_index
from core4.queue import secret


def event_document(name, data=None, channel="queue", author=None):
    """Return one event: ``{created, name, channel, author, hostname,
    data}`` (``created`` a UTC datetime: it carries the TTL). Secret job
    arguments in ``data`` show as ``***``."""
    return {"created": datetime.datetime.now(datetime.timezone.utc),
            "name": name, "channel": channel, "author": author,
            "hostname": hostname(), "data": secret.mask_document(data or {})}


def job_event(name, doc, **extra):
    """Return the event of a job's state change."""
    data = {"_id": doc["_id"], "name": doc.get("name"),
            "state": doc.get("state")}
    data.update(extra)
    return event_document(name, data)


#: the channel of the audit trail
AUDIT = "audit"
#: the actions audited (the ``name`` of an audit event)
AUDIT_ACTIONS = ("enqueue", "kill", "restart", "remove", "remove_hard",
                 "create_role", "update_role", "delete_role", "pause",
                 "resume", "halt")


def audit(action, by, **target):
    """Return the audit event of ``action`` done by the user ``by``:
    ``{created, name: action, channel: "audit", author: by, hostname,
    data: target}`` with the target's fields (e.g. ``job_id``,
    ``job_name``, ``role``, ``project``; never job arguments)."""
    return event_document(action, target, channel=AUDIT, author=by)


def setup(system, config):
    """Create the TTL index that bounds ``sys_event``."""
    ensure_index(system.event, [("created", 1)],
                 expireAfterSeconds=int(config.event.ttl))


def emit(system, event):
    """Write one event (or a list of events with one round trip) now;
    errors are ignored (events are not state)."""
    try:
        if isinstance(event, list):
            system.event.insert_many(event, ordered=False)
        else:
            system.event.insert_one(event)
    except pymongo.errors.PyMongoError:
        pass


class EventBuffer:
    """Events collected during a worker's loop pass, written together."""

    def __init__(self, system, limit=10000):
        self.system = system
        self.limit = limit
        self.pending = []

    def add(self, event):
        """Queue an event (the oldest are dropped beyond ``limit``)."""
        self.pending.append(event)
        if len(self.pending) > self.limit:
            del self.pending[:len(self.pending) - self.limit]

    def flush(self):
        """Write the queued events with one ``insert_many``."""
        if not self.pending:
            return
        events, self.pending = self.pending, []
        try:
            self.system.event.insert_many(events, ordered=False)
        except pymongo.errors.ConnectionFailure:
            self.pending = events + self.pending  # again after the outage
        except pymongo.errors.PyMongoError:
            pass
