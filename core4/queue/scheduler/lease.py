"""The scheduler's leader lease in ``sys_schedule``.

One document ``{_id: "__leader__", holder, until, since}`` decides which of
several schedulers enqueues: the holder renews ``until`` every
``scheduler.interval`` seconds for ``scheduler.lease`` seconds; the others
stand by and take it over once ``until`` passed. A holder that cannot
renew in time stops enqueuing (see :meth:`ScheduleLease.holding`).

``until`` and ``since`` are BSON datetimes (UTC, milliseconds); the methods
take epoch seconds (the scheduler's clock) and convert at the boundary. A
released lease has ``until`` 1970-01-01. A lease written by core4 before
0.3 (epoch seconds) is converted when it is found expired.
"""

import datetime
import time

import pymongo.errors

from core4.mongo import from_datetime, to_datetime

LEADER_ID = "__leader__"

#: ``until`` of a released lease
RELEASED = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def stored(epoch):
    """Epoch seconds as stored: an aware UTC datetime (milliseconds)."""
    return from_datetime(float(epoch))


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
        until, since = stored(now + self.lease), stored(now)
        mono = time.monotonic()
        coll = self.collection
        got = coll.update_one(
            {"_id": LEADER_ID, "holder": self.holder},
            {"$set": {"until": until}}).matched_count == 1
        if not got:
            got = self._take_over(since, until)
        if not got:
            doc = coll.find_one({"_id": LEADER_ID}, {"until": 1})
            if doc is None:
                try:
                    coll.insert_one({"_id": LEADER_ID, "holder": self.holder,
                                     "until": until, "since": since})
                    got = True
                except pymongo.errors.DuplicateKeyError:
                    pass
            elif self._legacy(doc, since):
                got = self._take_over(since, until)
        if got and not self.held:
            self.log.info("leading: enqueuing scheduled jobs")
        elif self.held and not got:
            self.log.warning("lost the lease: standing by")
        self.held = got
        if got:
            self._mono = mono
        return got

    def _take_over(self, since, until):
        """Take the lease if its ``until`` is before ``since`` (a datetime
        comparison in the database: one scheduler wins)."""
        return self.collection.find_one_and_update(
            {"_id": LEADER_ID, "until": {"$lt": since}},
            {"$set": {"holder": self.holder, "until": until,
                      "since": since}}) is not None

    def _legacy(self, doc, since):
        """True if lease ``doc`` holds an expired ``until`` in epoch seconds
        (core4 before 0.3): it is converted to a datetime (only while the
        old value is still there), to be taken over like any other."""
        old = doc.get("until")
        if isinstance(old, bool) or not isinstance(old, (int, float)):
            return False
        if to_datetime(old) >= since:
            return False
        self.collection.update_one({"_id": LEADER_ID, "until": old},
                                   {"$set": {"until": from_datetime(old)}})
        return True

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
            {"$set": {"until": stored(now() + self.lease)}})
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
                {"$set": {"until": RELEASED}})
        except pymongo.errors.PyMongoError as exc:
            self.log.error("cannot release the lease: %s", exc)
        self.held = False
