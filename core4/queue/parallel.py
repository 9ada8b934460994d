"""``max_parallel``: how many jobs of one name run at the same time, across
all workers.

Every job name with a limit has one document in ``sys_parallel``::

    {"_id": "mypro.jobs.Import", "holders": ["<job id>:<lease token>", ...]}

``holders`` lists the running jobs of the name in the order they were
admitted. After a claim, a worker appends the holders of the jobs it won
(one atomic ``$addToSet`` per name that returns the list) and keeps the jobs
whose holder landed at a position below their ``max_parallel``; the others
go back to the queue at once (the worker starts their processes gated
before it admits them, and drops those given back: see
:meth:`core4.queue.worker.CoreWorker.start_admitted`). Holders are only
ever appended at the end and removed anywhere, so a holder kept at
position ``p < limit`` has at most
``p`` holders before it for as long as it lives: at most ``limit`` kept
jobs run at any time, whatever the workers do concurrently. The cost is two
``_id`` updates per claimed batch and per finished batch of jobs, the same
with one worker or fifty, on MongoDB and on the embedded server (which
scans for any query not by ``_id``).

A job's holder is removed when its outcome is recorded. A worker that dies
leaves its holders behind; they name a lease token that the job no longer
has once it was recovered, so :meth:`ParallelLimit.sweep` removes them
(when a name is found full, and at every ``flag_jobs`` step).

Refusals cost a claim, a process forked in vain and a give-back, so
workers avoid them: several workers split a name's places into shares
that add up to its limit (:meth:`ParallelLimit.share_of`), and each claims
no more than its share while the others may want theirs
(:meth:`ParallelLimit.room`). A worker skips a name without room
(:meth:`ParallelLimit.capped_names`) and probes a name it was refused for
after a pause.
"""

import hashlib
import time

import pymongo
import pymongo.errors
from bson import ObjectId
from bson.errors import InvalidId

from core4.queue import lifecycle, states
from core4.queue.daemon import working

#: seconds between sweeps of one name's stale holders after it was found
#: full
SWEEP_AFTER = 2.0
#: seconds after which a worker that found a name full tries it again
PROBE_AFTER = 0.5
#: the longest pause between probes of a name found full again and again
#: (each refusal doubles the pause from PROBE_AFTER; an admission resets it)
PROBE_MAX = 8.0


def running_by_name(jobs):
    """Return ``{name: number of running jobs}`` of a worker's ``jobs``
    (its job processes by id)."""
    mine = {}
    for proc in jobs.values():
        mine[proc.doc["name"]] = mine.get(proc.doc["name"], 0) + 1
    return mine


def holder(doc):
    """The holder string of a claimed job ``doc``: its id and lease token."""
    return "%s:%s" % (doc["_id"], doc["locked"]["token"])


def parse_holder(value):
    """Return ``(job id, lease token)`` of a holder string (the id is None
    if it is not one)."""
    _id, _, token = str(value).partition(":")
    try:
        return ObjectId(_id), token
    except (InvalidId, TypeError):
        return None, token


class ParallelLimit:
    """The ``max_parallel`` bookkeeping of the worker ``identifier``. It
    claims no more of a name than its share of the places among the
    workers (:attr:`peers`); alone, no more than the places it knows to be
    free (it remembers how many holders each name had when it last
    admitted jobs of it). A name it was refused for, or found full, is
    probed again after :data:`PROBE_AFTER` seconds, twice as long after each
    refusal in a row up to :data:`PROBE_MAX` (the worker wakes for it, see
    :meth:`seconds_to_probe`), or at once when a job of it ends here."""

    def __init__(self, queue, identifier, peers=None, alive_within=60.0):
        self.queue = queue
        self.identifier = identifier
        self.alive_within = alive_within  # (seconds of a live heartbeat)
        self.limits = {}    # name -> max_parallel last seen
        self.known = {}     # name -> holders, as last seen (minus releases)
        self.seen = {}      # name -> monotonic time it was last seen
        self.waiters = {}   # name -> other workers waiting, as last seen
        self.waiting = set()  # names this worker waits for
        self.swept = {}     # name -> monotonic time of the last sweep
        self.probed = {}    # name -> seen when its probe was last due
        self.pauses = {}    # name -> seconds between its probes
        #: the workers that share the places: identifier -> True if all
        #: its slots were taken (:attr:`core4.queue.claim.Claimer.peers`)
        self.peers = {identifier: False} if peers is None else peers
        self.peers_stale = False  # the last admission met a worker not
        #                           in peers (waiting for a name)

    @property
    def collection(self):
        """The ``sys_parallel`` collection."""
        return self.queue.sys.parallel

    def room(self, name, mine):
        """How many more jobs of ``name`` to claim, with ``mine`` of them
        running here (None: no limit). Among several workers (:attr:`peers`)
        it is this worker's share of the places (:meth:`share_of`), one job
        while it has not admitted any of the name yet, more only while the
        others have no free slot and none waits for the name. A worker
        alone, or refused for the name, claims the places it knows to be
        free (within its share), and when it knows of none, probes with one
        job every :meth:`pause`."""
        limit = self.limits.get(name)
        if not limit:
            return None
        known = self.known.get(name)
        free = limit - mine if known is None else \
            min(limit - mine, limit - known)
        alone = self.alone(name)
        share = limit if alone else self.share_of(name, limit)
        if name in self.waiting or alone:
            if free <= 0 and known is not None and mine < share and \
                    time.monotonic() - self.seen[name] > self.pause(name):
                return 1  # did a place come free?
            return max(0, min(free, share - mine))
        room = share - mine
        if known is None:
            # the name is new here: another worker may hold its places
            # (it started before this one was known to it): one job first
            room = min(room, 1)
        elif not self.waiters.get(name) and all(
                full for worker, full in self.peers.items()
                if worker != self.identifier):
            room = max(room, free)  # the others cannot use their shares
        return max(room, 0)

    def alone(self, name):
        """True if this worker knows of no other worker that shares the
        places of ``name`` or waits for them."""
        return len(self.peers) == 1 and not self.waiters.get(name)

    def share_of(self, name, limit):
        """This worker's share of the ``limit`` places of ``name``: the
        places split evenly among the sharing workers, the rest one each to
        the first of them in an order of the name's own (rendezvous
        hashing). The shares add up to the limit, so workers that keep to
        theirs are never refused. If more workers wait for the name than
        this one knows, it splits among as many and takes none of the
        rest. A share is at least one job: with more workers than places,
        a worker whose share would be none may still run one job of the
        name when a place is free (admission decides; refused, it waits
        its pause)."""
        peers = sorted(self.peers, key=lambda worker: hashlib.blake2b(
            (name + "\0" + worker).encode(), digest_size=8).digest())
        count = max(len(peers), 1 + self.waiters.get(name, 0))
        base, rest = divmod(limit, count)
        if count > len(peers):
            rest = 0  # (workers not known here may have the rest)
        share = base + (1 if peers.index(self.identifier) < rest else 0)
        return max(share, 1)  # (admission permitting: no name starves)

    def pause(self, name):
        """Seconds between probes of ``name`` while it is found full."""
        return self.pauses.get(name, PROBE_AFTER)

    def seconds_to_probe(self, candidates, jobs):
        """Seconds until a name this worker was refused for, of which
        ``candidates`` wait, is probed again (see :meth:`room`; ``jobs``:
        the worker's job processes, a name whose share they fill is not
        probed): 0 once when one is due; None if no such name waits."""
        if not self.waiting:
            return None  # (the common case: the worker asks at every pass)
        mono = time.monotonic()
        mine = running_by_name(jobs)
        left = []
        for name in self.waiting & {c.name for c in candidates}:
            limit, seen = self.limits.get(name), self.seen.get(name)
            if not limit or seen is None or self.known.get(name, 0) < limit:
                continue
            share = limit if self.alone(name) else self.share_of(name, limit)
            if mine.get(name, 0) >= share:
                continue  # (a job of it that ends here wakes the worker)
            if seen + self.pause(name) > mono:
                left.append(seen + self.pause(name) - mono)
            elif self.probed.get(name) != seen:
                self.probed[name] = seen  # (each time it was found full)
                return 0.0
        return min(left) if left else None

    def capped_names(self, jobs):
        """Job names not to claim now: no room left for them."""
        mine = running_by_name(jobs)
        return {name for name in self.limits
                if self.room(name, mine.get(name, 0)) == 0}

    def batch_of(self, candidates, slots, jobs):
        """Split off the candidates of one claim: up to ``slots``, with no
        more of a name than it has room for (:meth:`room`). Returns
        ``(batch, rest)``."""
        mine = running_by_name(jobs)
        room = {}
        batch, rest = [], []
        for candidate in candidates:
            name = candidate.name
            if name not in room:
                if getattr(candidate, "max_parallel", None):
                    # (known before its first admission, too)
                    self.limits.setdefault(name, candidate.max_parallel)
                room[name] = self.room(name, mine.get(name, 0))
            if len(batch) < slots and room[name] != 0:
                batch.append(candidate)
                if room[name] is not None:
                    room[name] -= 1
            else:
                rest.append(candidate)
        if not batch:
            return [], []
        return batch, rest

    def withdraw(self, wanted):
        """Stop waiting for the names not in ``wanted`` (the names of the
        worker's candidates)."""
        for name in self.waiting - set(wanted):
            self._stop_waiting(name)

    def _stop_waiting(self, name):
        self.collection.update_one(
            {"_id": name}, {"$pull": {"waiting": self.identifier}})
        self.waiting.discard(name)

    # admitting and releasing ------------------------------------------------

    def admit(self, docs):
        """Of the just claimed ``docs`` (claim order), return those that may
        run; the others are given back to the queue, and the worker waits
        for their names."""
        by_name = {}
        self.peers_stale = False
        for doc in docs:
            if doc.get("max_parallel"):
                self.limits[doc["name"]] = doc["max_parallel"]
                by_name.setdefault(doc["name"], []).append(doc)
        refused = []
        for name, group in by_name.items():
            after = self._add(name, [holder(doc) for doc in group])
            holders = after.get("holders") or []
            position = {value: index for index, value in enumerate(holders)}
            over = [doc for doc in group
                    if position.get(holder(doc), 0) >= doc["max_parallel"]]
            self.known[name] = len(holders) - len(over)
            self.seen[name] = time.monotonic()
            waiting = set(after.get("waiting") or []) - {self.identifier}
            self.waiters[name] = len(waiting)
            self.peers_stale |= bool(waiting - set(self.peers))
            if over:
                if name in self.waiting and len(over) == len(group):
                    # refused again: probe it less often
                    self.pauses[name] = min(2 * self.pause(name), PROBE_MAX)
                self.waiting.add(name)
            else:
                self.pauses.pop(name, None)
                if name in self.waiting:
                    self._stop_waiting(name)
            refused.extend(over)
        if refused:
            self._give_back(refused)
        refused = {doc["_id"] for doc in refused}
        return [doc for doc in docs if doc["_id"] not in refused]

    def _add(self, name, values):
        """Append ``values`` to the holders of ``name``; return the
        document."""
        update = {"$addToSet": {"holders": {"$each": values}}}
        for _ in range(2):
            after = self.collection.find_one_and_update(
                {"_id": name}, update,
                return_document=pymongo.ReturnDocument.AFTER)
            if after is not None:
                return after
            # the first job of the name: create its document (not by an
            # upsert, which the embedded server cannot do with $each)
            try:
                self.collection.insert_one(
                    {"_id": name, "holders": [], "waiting": []})
            except pymongo.errors.DuplicateKeyError:
                pass
        raise RuntimeError("sys_parallel document of %s vanished" % name)

    def _give_back(self, docs):
        """The jobs ``docs`` are over their limit: back to the queue (as
        they were before the claim), their holders removed, this worker
        among the name's waiting."""
        self.queue.sys.queue.bulk_write([pymongo.UpdateOne(
            lifecycle.fence(doc),
            {"$set": {"state": states.FAILED if doc.get("last_error")
                      else states.PENDING},
             "$unset": {"locked": ""}, "$inc": {"trial": -1}})
            for doc in docs], ordered=False)
        self._pull(docs, {"$addToSet": {"waiting": self.identifier}})
        names = {doc["name"] for doc in docs}
        stale = [name for name in names
                 if time.monotonic() - self.swept.get(name, 0) > SWEEP_AFTER]
        if stale:
            self.sweep(stale)

    def release(self, docs):
        """The jobs ``docs`` (as claimed) ended here: remove their holders
        (one write per name), and make room for as many."""
        for name, values in self._pull(docs).items():
            if self.known.get(name) is not None:
                self.known[name] = max(0, self.known[name] - len(values))

    def _pull(self, docs, also=None):
        """Remove the holders of ``docs`` (and apply ``also`` to each name's
        document); return the holders removed by name."""
        by_name = {}
        for doc in docs:
            if doc.get("max_parallel") and doc.get("locked"):
                by_name.setdefault(doc["name"], []).append(holder(doc))
        if by_name:
            self.collection.bulk_write([pymongo.UpdateOne(
                {"_id": name},
                dict(also or {}, **{"$pull": {"holders": {"$in": values}}}))
                for name, values in by_name.items()], ordered=False)
        return by_name

    def sweep(self, names=None):
        """Remove the holders of jobs that no longer run with the holder's
        lease (their worker died, or gave them back and died), and the
        waiting workers that are gone, from the documents of ``names`` (all
        if None); the waiting workers counted here are those left."""
        query = {} if names is None else {"_id": {"$in": list(names)}}
        mono = time.monotonic()
        docs = list(self.collection.find(query))
        alive = None
        for doc in docs:
            self.swept[doc["_id"]] = mono
            values = doc.get("holders") or []
            update = {}
            ids = [_id for _id, _ in map(parse_holder, values) if _id]
            if ids:
                running = {
                    job["_id"]: (job.get("locked") or {}).get("token")
                    for job in self.queue.sys.queue.find(
                        {"_id": {"$in": ids}, "state": states.RUNNING},
                        {"locked": 1})}
                stale = [value for value in values
                         if running.get(parse_holder(value)[0])
                         != parse_holder(value)[1]]
                if stale:
                    update["holders"] = stale
            if doc.get("waiting"):
                if alive is None:
                    alive = self.alive_workers()
                gone = [w for w in doc["waiting"] if w not in alive]
                if gone:
                    update["waiting"] = gone
                self.waiters[doc["_id"]] = len(
                    set(doc["waiting"]) - set(gone) - {self.identifier})
            else:
                self.waiters.pop(doc["_id"], None)
            if update:
                self.collection.update_one({"_id": doc["_id"]}, {"$pull": {
                    key: {"$in": value} for key, value in update.items()}})

    def alive_workers(self):
        """Identifiers of the workers starting or in their loop whose
        heartbeat is at most ``alive_within`` seconds old (a worker that
        died or stops waits for no name)."""
        return set(working(self.queue.sys, self.alive_within))
