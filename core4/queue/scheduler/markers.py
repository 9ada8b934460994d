"""Fire-time markers in ``sys_schedule``: each fire time enqueued at most once.

A marker ``{_id: "<qual_name>@<fire epoch>", state, ...}`` is inserted
*before* the job is enqueued: its unique ``_id`` makes a fire time
enqueued at most once, whichever scheduler runs. ``state`` is
``enqueuing``, then ``done`` (with ``job_id``), ``skipped`` (the previous
run is still queued) or ``failed`` (with ``reason``). A marker left in
``enqueuing`` by a dead leader is taken over after one lease: the job is
enqueued again unless a job of that name was enqueued since the
interrupted attempt (in the queue or journal). Markers expire after
:data:`MARKER_TTL` seconds (a TTL index on ``created``).

Every time in a marker is a BSON datetime (UTC, milliseconds): ``fire``
(the fire time), ``at`` (the scheduler's step time of the attempt),
``wall`` (the wall clock of the attempt), ``created`` and ``finished``.
The methods take epoch seconds (the scheduler's clock) and convert them;
the ``_id`` keeps the fire time in whole epoch seconds. Markers written by
core4 before 0.3 (epoch seconds) are read as well.
"""

import datetime
import uuid

import pymongo.errors

from core4.mongo import (ensure_index, from_datetime, now as wall_now,
                         seconds, to_datetime)

#: seconds a fire-time marker is kept in sys_schedule
MARKER_TTL = 30 * 86400

#: outcomes of one fire time
DONE, SKIPPED, FAILED, HANDLED, WAIT = (
    "done", "skipped", "failed", "handled", "wait")

#: state of a marker whose job is being enqueued
ENQUEUING = "enqueuing"

#: a job enqueued this long before an interrupted attempt's wall time still
#: counts as enqueued by it (clocks of the hosts differ a little)
_SLACK = seconds(1.0)


def marker_id(name, fire):
    """The ``_id`` of the marker of job ``name`` at ``fire`` (epoch)."""
    return "%s@%d" % (name, fire)


class FireMarkers:
    """The fire-time markers written by scheduler ``holder``.

    ``system`` holds the system collections (``schedule``, ``queue`` and
    ``journal``), ``lease`` is the lease in seconds (after which an
    ``enqueuing`` marker counts as interrupted), ``log`` takes the messages
    and ``clock`` returns the current epoch seconds (``finished``).
    """

    def __init__(self, system, holder, lease, log, clock):
        self.sys = system
        self.holder = holder
        self.lease = lease
        self.log = log
        self.clock = clock
        self.tokens = set()     # marker tokens of this process
        self._indexed = False

    def ensure_index(self):
        """Create the TTL index of the markers (once per process)."""
        if not self._indexed:
            ensure_index(self.sys.schedule, [("created", 1)],
                         expireAfterSeconds=MARKER_TTL)
            self._indexed = True

    def begin(self, name, at, label, now):
        """Claim fire time ``at`` (epoch) of job ``name`` at step time
        ``now``: insert its marker, or take an interrupted one over.

        Returns ``(token, None)`` if the job is to be enqueued now (the
        marker carries ``token``), else ``(token, outcome)``."""
        mid = marker_id(name, at)
        token = uuid.uuid4().hex
        wall = wall_now()
        try:
            self.sys.schedule.insert_one({
                "_id": mid, "name": name, "fire": from_datetime(at),
                "state": ENQUEUING, "holder": self.holder,
                "token": token, "at": from_datetime(now), "wall": wall,
                "created": wall})
        except pymongo.errors.DuplicateKeyError:
            outcome = self.interrupted(mid, name, label, token, now)
            if outcome is not None:
                return token, outcome
        self.tokens.add(token)
        return token, None

    def interrupted(self, mid, name, label, token, now):
        """Marker ``mid`` exists. Returns the outcome, or None to enqueue
        now (the marker then carries ``token``)."""
        old = self.sys.schedule.find_one({"_id": mid})
        if old is None:
            return WAIT  # expired or removed at this moment: next step
        if old.get("state") != ENQUEUING:
            return HANDLED
        mine = old.get("token") in self.tokens
        attempt = to_datetime(old.get("at"))
        if not mine and attempt is not None and \
                attempt >= from_datetime(now - self.lease):
            return WAIT  # another scheduler is enqueuing it right now
        claimed = self.sys.schedule.find_one_and_update(
            {"_id": mid, "state": ENQUEUING,
             "token": old.get("token")},
            {"$set": {"holder": self.holder, "token": token,
                      "at": from_datetime(now), "wall": wall_now()}})
        if claimed is None:
            return WAIT
        self.tokens.discard(old.get("token"))
        job_id = self.enqueued_since(name, old.get("wall"))
        if job_id is not None:
            self.finish(mid, token, DONE, job_id=job_id,
                        reason="enqueued by an interrupted attempt")
            self.log.info("%s was enqueued by an interrupted attempt: [%s]",
                          label, job_id)
            return DONE
        self.log.warning("%s: completing an interrupted enqueue", label)
        return None

    def enqueued_since(self, name, wall):
        """The id of a job ``name`` enqueued at or after ``wall`` (a
        datetime, or epoch seconds of a marker of core4 before 0.3), in the
        queue or the journal, or None."""
        if isinstance(wall, bool) or \
                not isinstance(wall, (int, float, datetime.datetime)):
            return None
        query = {"name": name,
                 "enqueued.at": {"$gte": from_datetime(wall) - _SLACK}}
        for coll in (self.sys.queue, self.sys.journal):
            doc = coll.find_one(query, {"_id": 1})
            if doc is not None:
                return doc["_id"]
        return None

    def finish(self, mid, token, state, **fields):
        """Set the final ``state`` (and ``fields``) of marker ``mid`` if it
        still carries ``token``."""
        fields.update(state=state, finished=from_datetime(self.clock()))
        self.sys.schedule.update_one({"_id": mid, "token": token},
                                     {"$set": fields})
        self.tokens.discard(token)

    def drop(self, mid, token):
        """Remove marker ``mid`` if it still carries ``token`` (the fire
        time is tried again later)."""
        self.sys.schedule.delete_one({"_id": mid, "token": token})
        self.tokens.discard(token)
