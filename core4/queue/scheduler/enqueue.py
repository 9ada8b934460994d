"""The leader's work: enqueue the due fire times of the scheduled jobs.

Per job, ``{_id: "last:<qual_name>", at, schedule, timezone}`` in
``sys_schedule`` keeps the last handled fire time (``at``, a BSON datetime;
epoch seconds as written by core4 before 0.3 are read as well; the
scheduler computes in epoch seconds and converts when it reads and writes).
A job seen for the first time, or whose schedule or the time zone changed,
starts from *now* (no catch-up for a new schedule); a schedule removed and
later restored unchanged catches up by its policy (see
:func:`core4.queue.scheduler.schedule.due`). Each fire time goes through a
marker (:mod:`core4.queue.scheduler.markers`) so it is enqueued at most
once. A fire time whose previous run is still queued is not enqueued again
(logged; with catch-up ``all`` it waits).
"""

import datetime

from core4.error import CoreJobExists
from core4.mongo import from_datetime, to_datetime
from core4.mongo.connection import TRANSIENT
from core4.queue.job import args_hash
from core4.queue.scheduler.markers import (DONE, FAILED, SKIPPED, WAIT,
                                           marker_id)
from core4.queue.scheduler.schedule import (ALL, COALESCE, SKIP, due,
                                            next_fire)

LAST_PREFIX = "last:"

_NO_ARGS = args_hash({})


class ScheduleEnqueuer:
    """Enqueues the due fire times of scheduled jobs into ``queue`` (a
    :class:`core4.queue.queue.CoreQueue`).

    ``markers`` is the :class:`~core4.queue.scheduler.markers.FireMarkers`,
    ``holding`` a callable returning True while the lease surely lasts
    (checked before every fire time), ``log`` takes the messages. Fire
    times are evaluated in time zone ``tz`` (named ``timezone``); a job
    without its own policy follows ``catchup``; a fire time later than
    ``tolerance`` seconds is missed for ``skip``.
    """

    def __init__(self, queue, markers, holding, log, tz, timezone, catchup,
                 tolerance):
        self.queue = queue
        self.sys = queue.sys
        self.markers = markers
        self.holding = holding
        self.log = log
        self.tz = tz
        self.timezone = timezone
        self.catchup = catchup
        self.tolerance = tolerance
        self.jobs = {}          # qual_name -> last state (leader only)
        self.waiting = set()    # markers ids logged as waiting

    def reset(self):
        """Forget the cached last fire times (re-read when next needed)."""
        self.jobs = {}

    def run(self, entries, now):
        """Enqueue the due fire times at ``now`` (epoch seconds) of the
        scheduled registry ``entries`` (qual_name -> entry); stops when the
        lease is not held."""
        names = sorted(entries)
        self._load(names)
        for name in names:
            if not self.holding():
                return
            try:
                self._job(name, entries[name], now)
            except TRANSIENT:
                raise
            except Exception:
                self.jobs.pop(name, None)
                self.log.exception("scheduling %s failed", name)
        for name in [n for n in self.jobs if n not in entries]:
            del self.jobs[name]

    def _load(self, names):
        """Read the last fire times of jobs not in the cache."""
        missing = [name for name in names if name not in self.jobs]
        if not missing:
            return
        for name in missing:
            self.jobs[name] = None
        for doc in self.sys.schedule.find(
                {"_id": {"$in": [LAST_PREFIX + n for n in missing]}}):
            self.jobs[doc["_id"][len(LAST_PREFIX):]] = {
                "at": _epoch(doc.get("at")), "schedule": doc.get("schedule"),
                "timezone": doc.get("timezone"), "next": None}

    def _set_last(self, name, at, expression):
        stored = from_datetime(at)
        self.sys.schedule.update_one(
            {"_id": LAST_PREFIX + name},
            {"$set": {"at": stored, "schedule": expression,
                      "timezone": self.timezone}}, upsert=True)
        at = stored.timestamp()  # what the next leader reads
        state = {"at": at, "schedule": expression,
                 "timezone": self.timezone,
                 "next": next_fire(expression, at, self.tz)}
        self.jobs[name] = state
        return state

    def _job(self, name, entry, now):
        """Enqueue the due fire times of one job."""
        expression = entry["schedule"]
        state = self.jobs.get(name)
        if state is None or state["at"] is None or \
                state["schedule"] != expression or \
                state["timezone"] != self.timezone:
            state = self._set_last(name, now, expression)
            self.log.info("scheduling %s at %r (%s), next at %s", name,
                          expression, self.timezone, self._iso(
                              state["next"]))
            return
        if state["next"] is None:
            state["next"] = next_fire(expression, state["at"], self.tz)
        if now < state["next"]:
            return
        policy = entry.get("catchup") or self.catchup
        found = due(expression, state["at"], now, policy, self.tz,
                    self.tolerance)
        if found.dropped:
            self._log_dropped(name, policy, state["at"], found)
        handled = state["at"]
        if found.dropped and policy == ALL:
            handled = found.fires[0].timestamp() - 1.0
        for fire in found.fires:
            if not self.holding():
                break
            outcome = self._fire(name, fire, policy, now)
            if outcome == WAIT:
                break
            self.waiting.discard(marker_id(name, fire.timestamp()))
            handled = fire.timestamp()
        else:
            if found.newest is not None:
                handled = max(handled, found.newest.timestamp())
        if handled != state["at"]:
            self._set_last(name, handled, expression)

    def _log_dropped(self, name, policy, last, found):
        since = self._iso(last)
        if policy == COALESCE:
            self.log.info("%s: fire times missed since %s coalesce into one "
                          "run at %s", name, since, found.newest.isoformat())
        elif policy == SKIP:
            self.log.warning("%s: fire times missed since %s skipped (catch-"
                             "up skip)", name, since)
        else:
            self.log.warning("%s: more than %d fire times missed since %s: "
                             "the oldest are dropped", name,
                             len(found.fires), since)

    def _fire(self, name, fire, policy, now):
        """Enqueue job ``name`` for fire time ``fire`` at most once."""
        at = int(fire.timestamp())
        mid = marker_id(name, at)
        label = "%s at %s" % (name, fire.isoformat())
        if policy == ALL and self._queued(name) is not None:
            return self._wait(mid, label)  # no writes while waiting
        token, outcome = self.markers.begin(name, at, label, now)
        if outcome is not None:
            return outcome
        queued = self._queued(name)
        if queued is not None:
            return self._still_queued(mid, token, label, policy,
                                      queued["_id"])
        from core4.queue.remote import enqueue_anywhere
        try:
            job_id = enqueue_anywhere(self.queue, name)
        except CoreJobExists:
            return self._still_queued(mid, token, label, policy, None)
        except TRANSIENT:
            raise  # the marker stays ours: tried again at the next step
        except Exception as exc:
            reason = "%s: %s" % (type(exc).__name__, exc)
            self.markers.finish(mid, token, FAILED, reason=reason)
            self.log.error("%s: cannot enqueue: %s", label, reason)
            return FAILED
        self.markers.finish(mid, token, DONE, job_id=job_id)
        self.log.info("enqueued %s: [%s]", label, job_id)
        return DONE

    def _queued(self, name):
        """The previous run of ``name`` if it is still in the queue."""
        return self.sys.queue.find_one({"name": name, "_hash": _NO_ARGS},
                                       {"_id": 1})

    def _still_queued(self, mid, token, label, policy, job_id):
        """The previous run is still queued: wait (``all``) or skip."""
        if policy == ALL:
            self.markers.drop(mid, token)
            return self._wait(mid, label)
        fields = {"reason": "previous run still queued"}
        if job_id is not None:
            fields["job_id"] = job_id
        self.markers.finish(mid, token, SKIPPED, **fields)
        self.log.warning("%s not enqueued: the previous run%s is still "
                         "queued", label,
                         "" if job_id is None else " [%s]" % job_id)
        return SKIPPED

    def _wait(self, mid, label):
        if mid not in self.waiting:
            self.waiting.add(mid)
            self.log.info("%s waits until the previous run has left the "
                          "queue (catch-up all)", label)
        return WAIT

    def _iso(self, epoch):
        return datetime.datetime.fromtimestamp(
            float(epoch), tz=self.tz).isoformat()


def _epoch(value):
    """A stored time (a datetime, or epoch seconds of core4 before 0.3) as
    epoch seconds; None if there is none (or it is no time)."""
    if isinstance(value, bool) or not isinstance(
            value, (int, float, datetime.datetime)):
        return None
    return to_datetime(value).timestamp()
