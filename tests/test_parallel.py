"""``max_parallel`` across workers (:mod:`core4.queue.parallel`).

The admission tests run on every backend of ``fidelity_env``: several
workers' :class:`ParallelLimit` objects admit claimed jobs of one name at
the same time, from threads, and never keep more than the limit. The worker
tests run real workers on the embedded server.
"""

import itertools
import os
import signal
import threading

import pytest

from core4.mongo import now, seconds
from core4.queue import lifecycle, states
from core4.queue import parallel
from core4.queue.claim import Candidate, Claimer
from core4.queue.parallel import ParallelLimit, parse_holder
from core4.queue.queue import CoreQueue
from tests.support import let_worker_cycle, wait_for
from tests.test_worker import enqueue, wait_journal

DUMMY = "core4.queue.helper.job.example.DummyJob"
SLEEP = "tests.wjobs.jobs.SleepJob"
_UNIQUE = itertools.count()


@pytest.fixture
def queue(fidelity_env):
    """A CoreQueue on a fresh database of the backend under test."""
    return CoreQueue()


def claimed_jobs(queue, count, limit, worker):
    """Enqueue ``count`` jobs with ``max_parallel=limit`` and claim them as
    ``worker``; return the running documents."""
    docs = []
    for _ in range(count):
        job = queue.enqueue(DUMMY, max_parallel=limit,
                            sleep=next(_UNIQUE) / 1000)
        docs.append(lifecycle.claim_by_id(queue, job._id, worker))
    return docs


def test_concurrent_admissions_never_pass_the_limit(queue):
    limit = 3
    workers = ["w%d@h" % i for i in range(4)]
    for worker in workers:  # registered, as live workers are
        queue.sys.worker.insert_one(
            {"_id": worker, "kind": "worker", "phase": "loop",
             "heartbeat": now()})
    claimed = {w: claimed_jobs(queue, 3, limit, w) for w in workers}
    admitted = {}
    barrier = threading.Barrier(len(workers))

    def admit(worker):
        limiter = ParallelLimit(CoreQueue(), worker)
        barrier.wait()
        admitted[worker] = limiter.admit(claimed[worker])

    threads = [threading.Thread(target=admit, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    kept = [doc["_id"] for docs in admitted.values() for doc in docs]
    assert len(kept) == limit, admitted
    running = {doc["_id"] for doc in queue.sys.queue.find(
        {"state": states.RUNNING})}
    assert running == set(kept)
    # the others are pending again, as before their claim
    for doc in queue.sys.queue.find({"_id": {"$nin": kept}}):
        assert doc["state"] == states.PENDING and doc["trial"] == 0, doc
        assert "locked" not in doc
    holders = queue.sys.parallel.find_one({"_id": DUMMY})["holders"]
    assert sorted(parse_holder(h)[0] for h in holders) == sorted(kept)
    # every refused worker waits for the name
    waiting = queue.sys.parallel.find_one({"_id": DUMMY})["waiting"]
    assert set(waiting) == {w for w in workers if len(admitted[w]) < 3}


def test_released_places_are_taken_again(queue):
    first = ParallelLimit(CoreQueue(), "a@h")
    docs = claimed_jobs(queue, 2, 2, "a@h")
    assert first.admit(docs) == docs
    second = ParallelLimit(CoreQueue(), "b@h")
    [late] = claimed_jobs(queue, 1, 2, "b@h")
    assert second.admit([late]) == []
    for doc in docs[:1]:
        lifecycle.set_complete(queue, doc)
    first.release(docs[:1])
    again = lifecycle.claim_by_id(queue, late["_id"], "b@h")
    assert second.admit([again]) == [again]
    holders = queue.sys.parallel.find_one({"_id": DUMMY})["holders"]
    assert len(holders) == 2
    assert queue.sys.parallel.find_one({"_id": DUMMY})["waiting"] == []


def test_sweep_removes_holders_of_lost_jobs(queue):
    limiter = ParallelLimit(CoreQueue(), "dead@h")
    docs = claimed_jobs(queue, 2, 2, "dead@h")
    assert limiter.admit(docs) == docs
    # the worker died; recovery took one job back to pending
    lifecycle.set_lost(queue, docs[0], "worker dead@h lost")
    ParallelLimit(CoreQueue(), "alive@h").sweep()
    holders = queue.sys.parallel.find_one({"_id": DUMMY})["holders"]
    assert [parse_holder(h)[0] for h in holders] == [docs[1]["_id"]]


def test_a_full_name_makes_room_for_a_waiting_worker(queue):
    for worker in ("hog@h", "waiter@h"):
        queue.sys.worker.insert_one(
            {"_id": worker, "kind": "worker", "phase": "loop",
             "heartbeat": now()})
    hog = ParallelLimit(CoreQueue(), "hog@h")
    hog.admit(claimed_jobs(queue, 4, 4, "hog@h"))
    assert hog.room(DUMMY, 4) == 0
    waiter = ParallelLimit(CoreQueue(), "waiter@h")
    assert waiter.admit(claimed_jobs(queue, 1, 4, "waiter@h")) == []
    # the next time the hog admits, it learns that one worker waits
    [more] = claimed_jobs(queue, 1, 4, "hog@h")
    assert hog.admit([more]) == []
    assert hog.waiters[DUMMY] == 1
    # two of its jobs end: it keeps no more than its half of the places
    hog.known[DUMMY] = 2
    assert hog.room(DUMMY, 2) == 0
    assert hog.room(DUMMY, 1) == 1


def test_a_refused_worker_wakes_to_probe_the_name(queue):
    """A worker refused because a name was full probes it again after
    PROBE_AFTER, twice as long after each refusal in a row: its loop wakes
    for that (once per refusal) instead of sleeping until the fallback
    poll, and only while jobs of the name wait for it."""
    ParallelLimit(CoreQueue(), "hog@h").admit(
        claimed_jobs(queue, 2, 2, "hog@h"))
    waiter = ParallelLimit(CoreQueue(), "waiter@h")
    assert waiter.admit(claimed_jobs(queue, 1, 2, "waiter@h")) == []
    waiting = [Candidate(None, "pending", 0, False, 0, DUMMY, None)]
    assert waiter.seconds_to_probe([], {}) is None  # (no job of it waits)
    assert waiter.pause(DUMMY) == parallel.PROBE_AFTER
    assert waiter.seconds_to_probe(waiting, {}) <= parallel.PROBE_AFTER
    waiter.seen[DUMMY] -= parallel.PROBE_AFTER  # (the pause passed)
    # among two workers, one running job of the name fills its share
    waiter.peers["hog@h"] = False
    assert waiter.seconds_to_probe(waiting, {1: RunningJob(DUMMY)}) is None
    del waiter.peers["hog@h"]
    assert waiter.seconds_to_probe(waiting, {}) == 0
    assert waiter.seconds_to_probe(waiting, {}) is None  # (reported once)
    assert waiter.room(DUMMY, 0) == 1  # the probe: one job
    # refused again: the next probe waits twice as long
    assert waiter.admit(claimed_jobs(queue, 1, 2, "waiter@h")) == []
    assert waiter.pause(DUMMY) == 2 * parallel.PROBE_AFTER
    # the worker that filled the name itself does not probe it
    hog = ParallelLimit(CoreQueue(), "hog2@h")
    hog.limits[DUMMY], hog.known[DUMMY], hog.seen[DUMMY] = 2, 2, 0.0
    assert hog.seconds_to_probe(waiting, {}) is None


class RunningJob:
    """A worker's job process of the name ``name``, as a limit sees it."""

    def __init__(self, name):
        self.doc = {"name": name}


def test_a_worker_follows_claims_a_while_after_the_others_left(queue):
    """A worker's change stream brings the claims of jobs while other
    workers share the jobs out, and for a lease after the last one was
    seen: a heartbeat that comes and goes does not reopen it each time."""
    claimer = Claimer(CoreQueue(), "a@h", alive_within=60.0)
    claimer.share_out()
    assert not claimer.wants_claims()  # (alone)
    queue.sys.worker.insert_one({"_id": "b@h", "kind": "worker",
                                 "phase": "loop", "heartbeat": now()})
    assert claimer.share_out() and claimer.wants_claims()
    queue.sys.worker.update_one({"_id": "b@h"}, {"$set": {"phase": "exit"}})
    assert claimer.share_out() and claimer.peers == {"a@h": False}
    assert claimer.wants_claims()
    claimer.others_at -= 61.0  # (a lease later)
    assert not claimer.wants_claims()


def limited(count, limit, name=DUMMY):
    """``count`` candidates of ``name`` with ``max_parallel=limit``."""
    return [Candidate(i, "pending", 0, False, 0, name, None,
                      max_parallel=limit) for i in range(count)]


def test_workers_claim_shares_that_add_up_to_the_limit(queue):
    """Several workers split a name's places into shares that add up to
    its limit, so workers that claim at the same moment are never refused;
    which worker gets a place more depends on the name. With fewer places
    than workers, each may claim one job (the admission decides), so no
    name starves. A candidate tells the limit before any job of the name
    was admitted."""
    peers = {"a@h": False, "b@h": False, "c@h": False}
    limiters = [ParallelLimit(CoreQueue(), worker) for worker in peers]
    for limiter in limiters:
        limiter.peers = dict(peers)
    for name, limit in (("x.y.One", 15), ("x.y.Two", 15), ("x.y.Few", 2)):
        # a name new to a worker: one job first (another worker that
        # started alone may hold all its places)
        first = [len(limiter.batch_of(limited(20, limit, name), 16, {})[0])
                 for limiter in limiters]
        assert first == [1, 1, 1], first
        for limiter in limiters:  # (as after that job's admission)
            limiter.known[name], limiter.seen[name] = 0, 0.0
        claims = [len(limiter.batch_of(limited(20, limit, name), 16, {})[0])
                  for limiter in limiters]
        assert sum(claims) == max(limit, 3), (name, claims)
        assert max(claims) - min(claims) <= 1, (name, claims)
    # alone, a worker claims up to the limit; without one, its free slots
    alone = ParallelLimit(CoreQueue(), "a@h")
    assert len(alone.batch_of(limited(20, 15), 16, {})[0]) == 15
    # one worker it does not know yet waits for the name: half the places,
    # and none of the rest (that one may count on it)
    alone.waiters[DUMMY] = 1
    alone.known[DUMMY], alone.seen[DUMMY] = 0, 0.0  # (after an admission)
    assert alone.room(DUMMY, 0) == 7
    other = [Candidate(i, "pending", 0, False, 0, "x.y.Free", None)
             for i in range(20)]
    assert len(limiters[0].batch_of(other, 16, {})[0]) == 16


def test_a_worker_that_left_waits_for_no_name(queue):
    """A waiting worker that stopped or died (no fresh heartbeat) is
    removed from the name's ``waiting`` at the next sweep, and the others
    count only the waiting workers left: a name limited to 1 runs again on
    the worker left."""
    now_ = now()
    queue.sys.worker.insert_many([
        {"_id": "left@h", "kind": "worker", "phase": "loop",
         "heartbeat": now_ - seconds(120)},
        {"_id": "here@h", "kind": "worker", "phase": "loop",
         "heartbeat": now_}])
    queue.sys.parallel.insert_one(
        {"_id": DUMMY, "holders": [], "waiting": ["left@h"]})
    here = ParallelLimit(CoreQueue(), "here@h", alive_within=60.0)
    here.limits[DUMMY], here.waiters[DUMMY] = 1, 1  # (as last admitted)
    here.known[DUMMY], here.seen[DUMMY] = 0, 0.0
    assert here.room(DUMMY, 0) == 1  # (a share is at least one job)
    here.sweep()
    assert queue.sys.parallel.find_one({"_id": DUMMY})["waiting"] == []
    assert here.waiters[DUMMY] == 0
    assert here.room(DUMMY, 0) == 1 and here.room(DUMMY, 1) == 0


def test_a_worker_takes_the_places_others_cannot_use(queue):
    """While every other worker had all its slots taken, a worker claims
    the places it knows to be free beyond its share; once another waits for
    the name, its share again."""
    limiter = ParallelLimit(CoreQueue(), "a@h")
    limiter.peers = {"a@h": False, "b@h": False}
    limiter.limits[DUMMY] = 10
    assert limiter.room(DUMMY, 0) == 1  # (a name new here: one job first)
    limiter.known[DUMMY], limiter.seen[DUMMY] = 0, 0.0  # (it was admitted)
    assert limiter.room(DUMMY, 0) == 5
    limiter.peers["b@h"] = True  # (b ran max_jobs at its last heartbeat)
    assert limiter.room(DUMMY, 0) == 10
    limiter.known[DUMMY], limiter.seen[DUMMY] = 8, 0.0  # b holds places
    assert limiter.room(DUMMY, 4) == 2
    limiter.waiters[DUMMY] = 1
    assert limiter.room(DUMMY, 4) == 1  # (its share of 5)


def test_max_parallel_with_workers_killed(db, start_worker):
    """A worker killed while it holds places: its jobs run again elsewhere,
    its holders are swept, the limit holds throughout."""
    victim = start_worker("hold1")
    ids = [enqueue("SleepJob", key="mp%d" % i, secs=3, max_parallel=2)
           for i in range(4)]
    wait_for(lambda: len(list(db.sys_queue.find(
        {"name": SLEEP, "state": "running"}))) == 2, timeout=60,
        message="two jobs running on the first worker")
    os.killpg(victim.pid, signal.SIGKILL)
    other = start_worker("hold2")
    for _id in ids:
        wait_journal(db, _id, timeout=90, worker=other)
    spans = sorted((doc["start"], doc["end"]) for doc in db.w_report.find(
        {"_id": {"$regex": "^mp"}, "end": {"$exists": True}}))
    assert len(spans) == 4
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2, spans
    wait_for(lambda: not db.sys_parallel.find_one(
        {"_id": SLEEP})["holders"], timeout=60,
        message="the holders of the ended jobs removed")


def test_two_workers_share_a_limited_name_without_refusals(db, start_worker):
    """Two workers given 24 jobs of a name limited to 4 at once run them 4
    at a time between them, and claim no job that the limit sends back:
    each keeps to its share (before shares, both claimed up to the places
    they believed free, and about one claim in four was given back)."""
    # (a lease of 8 s: a worker late with its heartbeat on a loaded
    # machine is not taken for gone by the other)
    slow = {"CORE4_OPTION_daemon__heartbeat": "!!float 4"}
    workers = [start_worker("fair1", **slow), start_worker("fair2", **slow)]
    for worker in workers:  # each has seen the other
        let_worker_cycle(db, worker, beats=2)
    ids = [enqueue("SleepJob", key="fair%d" % i, secs=0.5, max_parallel=4)
           for i in range(24)]
    for _id in ids:
        wait_journal(db, _id, timeout=120, worker=workers[0])
    spans = sorted((doc["start"], doc["end"]) for doc in db.w_report.find(
        {"_id": {"$regex": "^fair"}, "end": {"$exists": True}}))
    assert len(spans) == 24
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 4, spans
    for worker in workers:  # (claims are published at each heartbeat)
        let_worker_cycle(db, worker, beats=1)
    claims = [doc["claims"] for doc in db.sys_worker.find(
        {"_id": {"$regex": "^fair"}})]
    assert all(c["won"] > 0 for c in claims), claims  # both ran jobs
    assert sum(c["won"] for c in claims) == 24, claims
