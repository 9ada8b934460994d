"""``max_parallel``: how many jobs of one name run at the same time, across
all workers.

A worker never claims more jobs of a name than the limit allows by its own
count (:meth:`ParallelLimit.batch_of`, :meth:`ParallelLimit.capped_names`).
Across workers it checks after a claim (:meth:`ParallelLimit.within`):
when the name may be near its limit it counts the running jobs of the name
and gives the job back if the limit is passed; far from the limit it counts
at most every :data:`COUNT_TTL` seconds. A name found at its limit is
skipped for a moment.
"""

import time

from core4.queue import lifecycle, states

#: seconds a count of running jobs of a name is trusted while far from
#: its max_parallel
COUNT_TTL = 2.0


def running_by_name(jobs):
    """Return ``{name: number of running jobs}`` of a worker's ``jobs``
    (its job processes by id)."""
    mine = {}
    for proc in jobs.values():
        mine[proc.doc["name"]] = mine.get(proc.doc["name"], 0) + 1
    return mine


class ParallelLimit:
    """The ``max_parallel`` bookkeeping of one worker; ``recheck`` is how
    long (seconds) a name found at its limit is skipped."""

    def __init__(self, queue, recheck):
        self.queue = queue
        self.recheck = recheck
        self.capped = {}    # name -> monotonic time until skipped
        self.limits = {}    # name -> max_parallel last seen
        self.counts = {}    # name -> (running elsewhere, monotonic)

    def capped_names(self, jobs):
        """Job names not to claim now: at their ``max_parallel`` among
        ``jobs``, or found at the limit across all workers a moment ago."""
        mono = time.monotonic()
        names = {name for name, until in self.capped.items() if until > mono}
        for name, count in running_by_name(jobs).items():
            limit = self.limits.get(name)
            if limit and count >= limit:
                names.add(name)
        return names

    def batch_of(self, candidates, slots, jobs):
        """Split off the candidates of one claim: up to ``slots``, with no
        more of a name than its ``max_parallel`` allows next to ``jobs``.
        Returns ``(batch, rest)``."""
        mine = running_by_name(jobs)
        batch, rest = [], []
        for candidate in candidates:
            limit = self.limits.get(candidate.name)
            if len(batch) < slots and not (
                    limit and mine.get(candidate.name, 0) >= limit):
                batch.append(candidate)
                mine[candidate.name] = mine.get(candidate.name, 0) + 1
            else:
                rest.append(candidate)
        if not batch:
            return [], []
        return batch, rest

    def released(self, name):
        """A job of ``name`` ended here: its name may be claimed again."""
        self.capped.pop(name, None)

    def within(self, doc, jobs, capacity):
        """After claiming ``doc`` (not yet in ``jobs``): True if it may run;
        else the job is given back. ``capacity`` is how many jobs all live
        workers together may run (None: unknown)."""
        limit = doc.get("max_parallel")
        if limit:
            self.limits[doc["name"]] = limit
        mine = running_by_name(jobs).get(doc["name"], 0) + 1
        if not limit or (capacity is not None
                         and limit >= max(capacity, len(jobs) + 1)):
            return True
        if not self.needs_count(doc["name"], limit, mine):
            return True
        if self.count_running(doc["name"], mine) <= limit:
            return True
        self.capped[doc["name"]] = time.monotonic() + self.recheck
        previous = states.FAILED if doc.get("last_error") else states.PENDING
        self.queue.sys.queue.update_one(
            lifecycle.fence(doc),
            {"$set": {"state": previous}, "$unset": {"locked": ""},
             "$inc": {"trial": -1}})
        return False

    def needs_count(self, name, limit, mine):
        """True if claiming one more job of ``name`` (``mine`` of which run
        here) may pass ``limit`` across all workers: the running jobs
        elsewhere were counted long ago, or they and ``mine`` come within
        half of the limit."""
        counted = self.counts.get(name)
        if counted is None or time.monotonic() - counted[1] > COUNT_TTL:
            return True
        return 2 * (counted[0] + mine + 1) > limit

    def count_running(self, name, mine):
        """Count the running jobs of ``name`` across all workers; remember
        how many run elsewhere. Returns the total."""
        total = len(list(self.queue.sys.queue.find(
            {"name": name, "state": states.RUNNING}, {"_id": 1})))
        self.counts[name] = (max(0, total - mine), time.monotonic())
        return total
