"""Finding and claiming due jobs for one worker.

A :class:`Claimer` keeps the worker's *candidates*: ids of jobs that are
due, learnt from change-stream hints (:mod:`core4.queue.wakeup`) and from
scans of the queue, in claim order (``force`` first, then ``priority``,
then FIFO by ``_id``). A claim takes one candidate by its ``_id`` with one
atomic ``find_one_and_update`` conditioned on the state the candidate was
seen in and on its ``query_at`` having passed, so a job taken, killed,
removed or moved into the future meanwhile is simply not claimed. Every
claim writes a fresh lease token (``locked.token``) that fences all later
writes of the job. A worker with several free slots claims several
candidates in two round trips: one unordered bulk write of single-document
updates (each as conditioned as a single claim, all retryable) and one read
of the documents it won, by ``_id`` and lease token.

Claims by ``_id`` cost the same however many jobs wait, on MongoDB and on
the embedded server alike (which serves only ``_id`` lookups from an
index); the scans run only when the worker starts, when the change stream
(re)opens, when the candidates run out, and as a slow fallback poll.

Several workers share the due jobs out among themselves: each job has one
*owner* among the workers in their loop in ``sys_worker`` (by its ``_id``,
see :func:`owner_of`), and within a priority a worker claims its own jobs
before the others'. Workers that read the same candidates (every worker
sees every change event and scans the same page) so claim different jobs
instead of racing for the same ones, and a claim lost to another worker
becomes rare. Ownership is only an order, so no job waits long for a busy
or dead owner: another worker's job learnt from the change stream is
offered after :data:`FOREIGN_GRACE`, one seen in a scan after
:data:`STALE_AFTER` or when a scan holds no job of the worker's own.

``max_parallel`` is the worker's business (:mod:`core4.queue.parallel`).
"""

import hashlib
import itertools
import time

import pymongo
from bson import ObjectId

from core4.base import project_of
from core4.mongo import now, to_datetime
from core4.mongo.connection import TRANSIENT
from core4.queue import lifecycle, states
from core4.queue.daemon import working

#: least seconds between two reads of the workers that share jobs out
SHARE_AFTER = 1.0
#: seconds after which a job that another worker owns, seen in a scan and
#: not claimed since, is claimed like an own one (its owner may be busy)
STALE_AFTER = 5.0
#: seconds a worker leaves a hinted job to its owner (another worker,
#: see :func:`owner_of`) before it may claim it itself: an owner with a
#: free slot claims it first, and the change stream tells the others
FOREIGN_GRACE = 0.05
#: most candidates one scan returns per claimable state
SCAN_LIMIT = 500
#: the fields a scan reads
SCAN_FIELDS = {"_id": 1, "state": 1, "priority": 1, "force": 1, "name": 1,
               "worker": 1, "query_at": 1, "trial": 1, "max_parallel": 1}


def earliest(*seconds):
    """The least of ``seconds`` that are not None (None if all are)."""
    known = [value for value in seconds if value is not None]
    return min(known) if known else None


def claim_order(force, priority, _id):
    """Sort key of a candidate: force first, then priority, then FIFO."""
    return (0 if force else 1, -(priority or 0), _id)


def owner_of(_id, workers):
    """The worker (one of the identifiers ``workers``) that owns the job
    ``_id``: the one whose hash with the job's id is highest (rendezvous
    hashing). Jobs spread evenly, and when a worker comes or goes only the
    jobs it owns change owner."""
    key = _id.binary if isinstance(_id, ObjectId) else str(_id).encode()
    return max(workers, key=lambda worker: hashlib.blake2b(
        key + worker.encode(), digest_size=8).digest())


class Candidate:
    """A job that may be claimable, as last seen; ``mine`` is True if the
    worker owns it (see :func:`owner_of`), ``since`` when the worker first
    saw it (monotonic)."""

    __slots__ = ("id", "state", "trial", "force", "priority", "name",
                 "worker", "key", "mine", "after", "since", "max_parallel")

    def __init__(self, _id, state, trial, force, priority, name, worker,
                 mine=True, after=0.0, max_parallel=None):
        self.id = _id
        self.state = state
        self.trial = trial if isinstance(trial, int) else None
        self.force = bool(force)
        self.priority = priority or 0
        self.name = name
        self.worker = worker
        self.key = claim_order(self.force, self.priority, _id)
        self.mine = mine
        self.after = after  # monotonic time from which it is offered
        self.since = time.monotonic()
        self.max_parallel = max_parallel if isinstance(
            max_parallel, int) and not isinstance(max_parallel, bool) \
            and max_parallel > 0 else None

    def first(self, stale):
        """True if it comes before other workers' jobs: it is the worker's
        own, or was seen before ``stale`` (monotonic) and not claimed."""
        return self.mine or self.since < stale

    def order(self, stale):
        """Claim order within a worker: force, priority, own (and stale)
        jobs before the other workers', FIFO."""
        return self.key[0], self.key[1], not self.first(stale), self.key[2]


class Claimer:
    """Candidates and claims of the worker ``identifier``; it shares jobs
    out with the workers whose heartbeat is at most ``alive_within``
    seconds old."""

    def __init__(self, queue, identifier, alive_within=60.0):
        self.queue = queue
        self.identifier = identifier
        self.alive_within = alive_within
        self.candidates = {}      # _id -> Candidate
        self.unknown = set()      # ids hinted without state/priority
        self.scan_wanted = True   # scan before the next claim
        self.more = False         # the last scan read a full page
        self.next_due = None      # earliest known future query_at
        self.uncertain = {}       # lease token -> monotonic time of a claim
        #                           whose answer was lost
        self.workers = (identifier,)  # the workers sharing jobs out
        self.peers = {identifier: False}  # the workers starting or in
        #                           their loop -> all slots taken
        self.own_scanned = False  # the last scan found jobs of this worker
        self.shared_at = 0.0      # monotonic time of the last share_out
        self.share_wanted = False  # a claim was lost since
        self.others_at = None     # monotonic time others were last known
        self.won = 0              # claims won, and lost (the job was taken,
        self.lost = 0             # or no longer claimable), so far

    # sharing jobs out -------------------------------------------------------

    def counts(self):
        """``{"won": claims won, "lost": claims lost}`` so far."""
        return {"won": self.won, "lost": self.lost}

    def share_out(self):
        """Share the jobs out among the workers in their loop (read from
        ``sys_worker``); the worker calls it at every heartbeat, and a claim
        lost to another worker does (at most every :data:`SHARE_AFTER`
        seconds): a worker came or went. The places of names with a
        ``max_parallel`` are shared among the workers starting or in their
        loop (:attr:`peers`). True if those changed (a worker came, went,
        or has all its slots taken now or no longer)."""
        self.shared_at = time.monotonic()
        self.share_wanted = False
        try:
            found = working(self.queue.sys, self.alive_within)
        except TRANSIENT:
            return False  # the workers as known before: read at the next
        before = dict(self.peers)
        self.peers.clear()  # (in place: the worker's ParallelLimit reads it)
        self.peers.update(
            (worker, full) for worker, (_, full) in found.items())
        self.peers[self.identifier] = False
        if len(self.peers) > 1:
            self.others_at = self.shared_at
        self.share([worker for worker, (phase, _) in found.items()
                    if phase == "loop"])
        return self.peers != before

    def wants_claims(self):
        """True if the worker's change stream should bring the claims of
        jobs: other workers share the jobs out, or did within the last
        ``alive_within`` seconds (a heartbeat that comes and goes around
        that age does not reopen the stream again and again)."""
        return self.others_at is not None and \
            time.monotonic() - self.others_at <= self.alive_within

    def share(self, identifiers):
        """Share the jobs out among the live workers ``identifiers`` (this
        worker counts in any case)."""
        workers = tuple(sorted(set(identifiers) | {self.identifier}))
        if workers == self.workers:
            return
        self.workers = workers
        for candidate in self.candidates.values():
            candidate.mine = self.owns(candidate.id, candidate.worker)

    def owns(self, _id, worker=None):
        """True if this worker owns the job ``_id`` (a job meant for a
        worker, ``worker``, is owned by that one)."""
        if worker is not None or len(self.workers) == 1:
            return worker in (None, self.identifier)
        return owner_of(_id, self.workers) == self.identifier

    def _candidate(self, _id, state, trial, force, priority, name, worker,
                   max_parallel=None, hinted=False):
        """A candidate; another worker's job learnt from a hint is offered
        after :data:`FOREIGN_GRACE`."""
        mine = self.owns(_id, worker)
        after = 0.0 if mine or not hinted else \
            time.monotonic() + FOREIGN_GRACE
        return Candidate(_id, state, trial, force, priority, name, worker,
                         mine, after, max_parallel)

    def seconds_to_wake(self):
        """Seconds until the worker should claim (0: now, reported once;
        None: no timer): a waiting job becomes due (a scan finds it), or
        another worker's hinted job is offered."""
        due = self.seconds_to_due()
        if due == 0:
            self.next_due = None
            self.scan_wanted = True
            return 0.0
        return earliest(due, self.seconds_to_offer())

    def seconds_to_offer(self):
        """Seconds until another worker's hinted job is offered (0: one is
        now, once), or None if none waits."""
        waiting = [c for c in self.candidates.values() if c.after]
        if not waiting:
            return None
        mono = time.monotonic()
        due = [c for c in waiting if c.after <= mono]
        for candidate in due:
            candidate.after = 0.0
        if due:
            return 0.0
        return min(c.after for c in waiting) - mono

    # learning about jobs ----------------------------------------------------

    def hint(self, hint):
        """Take a change-stream hint (:class:`core4.queue.wakeup.Hint`);
        return True if it may make a job claimable (a claim pass is due),
        False if not (a job taken, or meant for another worker)."""
        if hint.state == states.RUNNING:
            self.candidates.pop(hint.id, None)
            self.unknown.discard(hint.id)
            return False
        if hint.worker not in (None, self.identifier):
            return False
        at = now()
        if hint.query_at is not None and hint.query_at > at:
            self.due_at(hint.query_at)
            self.candidates.pop(hint.id, None)
            return True
        if hint.state is None or hint.priority is None:
            # an update on MongoDB: state or priority unknown
            self.unknown.add(hint.id)
            return True
        self.candidates[hint.id] = self._candidate(
            hint.id, hint.state, hint.trial, hint.force, hint.priority,
            hint.name, hint.worker, hint.max_parallel, hinted=True)
        return True

    def due_at(self, at):
        """Remember that a job becomes due at ``at`` (a datetime)."""
        if self.next_due is None or at < self.next_due:
            self.next_due = at

    def seconds_to_due(self):
        """Seconds until the earliest known future job is due (or None)."""
        if self.next_due is None:
            return None
        return max(0.0, (self.next_due - now()).total_seconds())

    def scan(self):
        """Read the due jobs (per claimable state, in claim order) and the
        earliest future ``query_at``. Returns the number of candidates."""
        at = now()
        self.scan_wanted = False
        self.unknown.clear()
        found = {}
        full = False
        for state in states.CLAIMABLE:
            # one state per query: equality on state plus the range on
            # query_at is what an index serves (and what stays fast on the
            # embedded server, where $in next to a date range is not)
            docs = list(self.queue.sys.queue.find(
                {"state": state, "query_at": {"$lte": at}}, SCAN_FIELDS)
                .sort([("force", pymongo.DESCENDING),
                       ("priority", pymongo.DESCENDING), ("_id", 1)])
                .limit(SCAN_LIMIT))
            full = full or len(docs) == SCAN_LIMIT
            for doc in docs:
                if doc.get("worker") in (None, self.identifier):
                    found[doc["_id"]] = self._candidate(
                        doc["_id"], state, doc.get("trial"), doc.get("force"),
                        doc.get("priority"), doc.get("name"),
                        doc.get("worker"), doc.get("max_parallel"))
        for _id, candidate in found.items():  # (seen since)
            if _id in self.candidates:
                candidate.since = self.candidates[_id].since
        self.candidates = found
        # more than one page: scan again once these (or this worker's own
        # among them) are taken
        self.more = full
        self.own_scanned = any(c.mine for c in found.values())
        self.next_due = None
        for state in states.WAITING:
            for doc in self.queue.sys.queue.find(
                    {"state": state, "query_at": {"$gt": at}},
                    {"query_at": 1}).sort("query_at", 1).limit(1):
                self.due_at(to_datetime(doc["query_at"]))
        return len(found)

    def scan_due(self):
        """True if the next claim should scan first: a scan was asked for,
        or the candidates of a full page ran out, or this worker's own among
        them (the next page holds more of its own: it takes the others'
        jobs only once a page has none of its own)."""
        if self.scan_wanted or (self.more and not self.candidates):
            return True
        stale = time.monotonic() - STALE_AFTER
        return self.own_scanned and not any(
            c.first(stale) for c in self.candidates.values())

    # claiming ---------------------------------------------------------------

    def next_candidates(self, excluded_names=(), excluded_projects=(),
                        force_only=False, excluded_ids=()):
        """Candidates in claim order (see :meth:`Candidate.order`), without
        the excluded ones."""
        mono = time.monotonic()
        stale = mono - STALE_AFTER
        ordered = sorted(self.candidates.values(),
                         key=lambda c: c.order(stale))
        found = [c for c in ordered
                 if c.after <= mono and c.name not in excluded_names
                 and project_of(c.name or "") not in excluded_projects
                 and (c.force or not force_only)
                 and c.id not in excluded_ids]
        if self.own_scanned and found and found[0].first(stale):
            # the others' jobs of a scan are taken by their owners
            # meanwhile: once this worker's own that come first are taken,
            # a new scan shows which are left (see scan_due)
            return list(itertools.takewhile(lambda c: c.first(stale),
                                            found))
        return found

    def claim(self, candidates):
        """Claim ``candidates``; return the documents of the jobs won (in
        claim order), without those no longer claimable. The candidates are
        forgotten either way."""
        for candidate in candidates:
            self.candidates.pop(candidate.id, None)
        if not candidates:
            return []
        if self.share_wanted and \
                time.monotonic() - self.shared_at > SHARE_AFTER:
            self.share_out()  # (before a claim: nothing won is at stake)
        won = self._claim(candidates)
        self.won += len(won)
        self.lost += len(candidates) - len(won)
        # a claim lost to another worker: did a worker come or go?
        self.share_wanted |= len(won) < len(candidates)
        return won

    def _claim(self, candidates):
        at = now()
        lease = lifecycle.new_lease(self.identifier)
        try:
            if len(candidates) == 1:
                query, update = self._claim_of(candidates[0], lease, at)
                doc = self.queue.sys.queue.find_one_and_update(
                    query, update,
                    return_document=pymongo.ReturnDocument.AFTER)
                return [] if doc is None else [doc]
            result = self.queue.sys.queue.bulk_write(
                [pymongo.UpdateOne(*self._claim_of(candidate, lease, at))
                 for candidate in candidates], ordered=False)
            if not result.modified_count:
                return []
            order = {c.id: c.key for c in candidates}
            won = list(self.queue.sys.queue.find(
                {"_id": {"$in": list(order)},
                 "locked.token": lease["token"]}))
        except TRANSIENT:
            # the claim may have been written before the connection broke
            self.uncertain[lease["token"]] = time.monotonic()
            raise
        return sorted(won, key=lambda doc: order[doc["_id"]])

    @staticmethod
    def _claim_of(candidate, lease, at):
        """The filter and update claiming ``candidate``: still in the state
        it was seen in (and at its trial, if known), due, not killed or
        removed."""
        query = {"_id": candidate.id, "state": candidate.state,
                 "query_at": {"$lte": at},
                 "removed_at": {"$exists": False},
                 "killed_at": {"$exists": False}}
        first = None
        if candidate.trial is not None:
            query["trial"] = candidate.trial
            first = candidate.trial == 0
        return query, lifecycle.claim_update(lease, at, first)

    def give_back_uncertain(self, running, mine, expired_after):
        """Give back the jobs a claim of this worker took although its
        answer was lost (the connection broke): ``running`` are the
        worker's running documents as stored, ``mine`` the ids of the jobs
        it runs. They go back to the queue at once, as before the claim
        (nothing of them ran). Claims older than ``expired_after`` seconds
        are left to recovery."""
        mono = time.monotonic()
        for token, at in list(self.uncertain.items()):
            if mono - at > expired_after:
                del self.uncertain[token]
        given = []
        for doc in running:
            token = (doc.get("locked") or {}).get("token")
            if token in self.uncertain and doc["_id"] not in mine:
                result = self.queue.sys.queue.update_one(
                    lifecycle.fence(doc),
                    {"$set": {"state": states.FAILED if doc.get("last_error")
                              else states.PENDING},
                     "$unset": {"locked": ""}, "$inc": {"trial": -1}})
                if result.modified_count:
                    given.append(doc["_id"])
        if running is not None and self.uncertain:
            self.uncertain.clear()  # the claims' jobs are known now
        return given

    def resolve_unknown(self):
        """Turn ids hinted without state (MongoDB updates) into candidates
        by reading them (one query)."""
        if not self.unknown:
            return
        ids, self.unknown = list(self.unknown), set()
        at = now()
        for doc in self.queue.sys.queue.find({"_id": {"$in": ids}},
                                             SCAN_FIELDS):
            if doc.get("state") not in states.CLAIMABLE \
                    or doc.get("worker") not in (None, self.identifier):
                continue
            query_at = to_datetime(doc.get("query_at"))
            if query_at is not None and query_at > at:
                self.due_at(query_at)
                continue
            self.candidates[doc["_id"]] = self._candidate(
                doc["_id"], doc["state"], doc.get("trial"), doc.get("force"),
                doc.get("priority"), doc.get("name"), doc.get("worker"),
                doc.get("max_parallel"), hinted=True)
