"""The scheduler's leader lease in ``sys_schedule``.

One document ``{_id: "__leader__", holder, until, since}`` decides which of
several schedulers enqueues: the holder renews ``until`` every
``scheduler.interval`` seconds for ``scheduler.lease`` seconds; the others
stand by and take it over once ``until`` passed. A holder that cannot
renew in time stops enqueuing (see :meth:`ScheduleLease.holding`).
"""

import time

import pymongo.errors

LEADER_ID = "__leader__"


class ScheduleLease:
    """The lease of scheduler ``holder`` (its identifier) in ``collection``
    (``sys_schedule``), ``lease`` seconds long; messages go to ``log``.

    :attr:`held` is True while this scheduler believes it leads.
    """

    def __init__(self, collection, holder, lease, log):
        self.collection = collection
        self.holder = holder
        self.lease = lease
        self.log = log
        self.held = False
        self._mono = 0.0  # time.monotonic() of the last successful renewal

    def acquire(self, now):
        """Renew the lease at ``now`` (epoch seconds) or take it over if it
        expired. Logs a change of leadership; returns True if held."""
        until = now + self.lease
        mono = time.monotonic()
        coll = self.collection
        got = coll.update_one(
            {"_id": LEADER_ID, "holder": self.holder},
            {"$set": {"until": until}}).matched_count == 1
        if not got:
            got = coll.find_one_and_update(
                {"_id": LEADER_ID, "until": {"$lt": now}},
                {"$set": {"holder": self.holder, "until": until,
                          "since": now}}) is not None
        if not got and coll.find_one({"_id": LEADER_ID}, {"_id": 1}) is None:
            try:
                coll.insert_one({"_id": LEADER_ID, "holder": self.holder,
                                 "until": until, "since": now})
                got = True
            except pymongo.errors.DuplicateKeyError:
                pass
        if got and not self.held:
            self.log.info("leading: enqueuing scheduled jobs")
        elif self.held and not got:
            self.log.warning("lost the lease: standing by")
        self.held = got
        if got:
            self._mono = mono
        return got

    def holding(self, now):
        """True if the lease surely lasts; renewed (until ``now()`` plus a
        lease, ``now`` a callable returning epoch seconds) once half of it
        passed. A holder that cannot renew lets the lease go."""
        if not self.held:
            return False
        if time.monotonic() - self._mono < self.lease / 2:
            return True
        mono = time.monotonic()
        result = self.collection.update_one(
            {"_id": LEADER_ID, "holder": self.holder},
            {"$set": {"until": now() + self.lease}})
        if result.matched_count == 1:
            self._mono = mono
            return True
        self.log.warning("lost the lease during a step: standing by")
        self.held = False
        return False

    def release(self):
        """Give the lease up (if held) so a standby takes over at once."""
        if not self.held:
            return
        try:
            self.collection.update_one(
                {"_id": LEADER_ID, "holder": self.holder},
                {"$set": {"until": 0.0}})
        except pymongo.errors.PyMongoError as exc:
            self.log.error("cannot release the lease: %s", exc)
        self.held = False
