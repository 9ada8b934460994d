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

``max_parallel`` is the worker's business (:mod:`core4.queue.parallel`).
"""

import time

import pymongo

from core4.base import project_of
from core4.mongo import now, to_datetime
from core4.mongo.connection import TRANSIENT
from core4.queue import lifecycle, states

#: most candidates one scan returns per claimable state
SCAN_LIMIT = 500
#: the fields a scan reads
SCAN_FIELDS = {"_id": 1, "state": 1, "priority": 1, "force": 1, "name": 1,
               "worker": 1, "query_at": 1, "trial": 1}


def claim_order(force, priority, _id):
    """Sort key of a candidate: force first, then priority, then FIFO."""
    return (0 if force else 1, -(priority or 0), _id)


class Candidate:
    """A job that may be claimable, as last seen."""

    __slots__ = ("id", "state", "trial", "force", "priority", "name",
                 "worker", "key")

    def __init__(self, _id, state, trial, force, priority, name, worker):
        self.id = _id
        self.state = state
        self.trial = trial if isinstance(trial, int) else None
        self.force = bool(force)
        self.priority = priority or 0
        self.name = name
        self.worker = worker
        self.key = claim_order(self.force, self.priority, _id)


class Claimer:
    """Candidates and claims of the worker ``identifier``."""

    def __init__(self, queue, identifier):
        self.queue = queue
        self.identifier = identifier
        self.candidates = {}      # _id -> Candidate
        self.unknown = set()      # ids hinted without state/priority
        self.scan_wanted = True   # scan before the next claim
        self.more = False         # the last scan read a full page
        self.next_due = None      # earliest known future query_at
        self.uncertain = {}       # lease token -> monotonic time of a claim
        #                           whose answer was lost

    # learning about jobs ----------------------------------------------------

    def hint(self, hint):
        """Take a change-stream hint (:class:`core4.queue.wakeup.Hint`)."""
        if hint.worker not in (None, self.identifier):
            return
        at = now()
        if hint.query_at is not None and hint.query_at > at:
            self.due_at(hint.query_at)
            self.candidates.pop(hint.id, None)
            return
        if hint.state is None or hint.priority is None:
            # an update on MongoDB: state or priority unknown
            self.unknown.add(hint.id)
            return
        self.candidates[hint.id] = Candidate(
            hint.id, hint.state, hint.trial, hint.force, hint.priority, hint.name,
            hint.worker)

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
                    found[doc["_id"]] = Candidate(
                        doc["_id"], state, doc.get("trial"), doc.get("force"),
                        doc.get("priority"), doc.get("name"),
                        doc.get("worker"))
        self.candidates = found
        # more than one page: scan again once these are taken
        self.more = full
        self.next_due = None
        for state in states.WAITING:
            for doc in self.queue.sys.queue.find(
                    {"state": state, "query_at": {"$gt": at}},
                    {"query_at": 1}).sort("query_at", 1).limit(1):
                self.due_at(to_datetime(doc["query_at"]))
        return len(found)

    def scan_due(self):
        """True if the next claim should scan first: a scan was asked for,
        or the candidates of a full page ran out."""
        return self.scan_wanted or (self.more and not self.candidates)

    # claiming ---------------------------------------------------------------

    def next_candidates(self, excluded_names=(), excluded_projects=(),
                        force_only=False):
        """Candidates in claim order, without the excluded ones."""
        ordered = sorted(self.candidates.values(), key=lambda c: c.key)
        return [c for c in ordered
                if c.name not in excluded_names
                and project_of(c.name or "") not in excluded_projects
                and (c.force or not force_only)]

    def claim(self, candidates):
        """Claim ``candidates``; return the documents of the jobs won (in
        claim order), without those no longer claimable. The candidates are
        forgotten either way."""
        for candidate in candidates:
            self.candidates.pop(candidate.id, None)
        if not candidates:
            return []
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
            self.candidates[doc["_id"]] = Candidate(
                doc["_id"], doc["state"], doc.get("trial"), doc.get("force"),
                doc.get("priority"), doc.get("name"), doc.get("worker"))
