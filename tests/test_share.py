"""Workers share the due jobs out (:mod:`core4.queue.claim`): each job has
one owner among the workers in their loop, and a worker claims its own jobs
before the others', so workers that read the same candidates do not race
for the same jobs. Ownership is only an order: no job waits for its owner.

The claimer tests run on every backend of ``fidelity_env``; the worker test
runs two real workers on the embedded server."""

import collections
import itertools

import pytest
from bson import ObjectId

from core4.queue import states
from core4.queue import claim
from core4.queue.claim import Claimer, owner_of
from core4.queue.queue import CoreQueue
from core4.queue.wakeup import Hint
from tests.support import let_worker_cycle, wait_for

NOOP = "core4.queue.helper.job.example.NoopJob"
DUMMY = "core4.queue.helper.job.example.DummyJob"
A, B = "a@host", "b@host"
_UNIQUE = itertools.count()


@pytest.fixture
def queue(fidelity_env):
    """A CoreQueue on a fresh database of the backend under test."""
    return CoreQueue()


def enqueue_many(queue, count, **kwargs):
    return [queue.enqueue(DUMMY, sleep=next(_UNIQUE) / 1000, **kwargs)._id
            for _ in range(count)]


def sharing(queue, *identifiers):
    """A scanned claimer per worker, all sharing the jobs out."""
    claimers = []
    for identifier in identifiers:
        claimer = Claimer(queue, identifier)
        claimer.share(identifiers)
        claimer.scan()
        claimers.append(claimer)
    return claimers


def test_jobs_spread_over_the_workers_and_stay_with_them():
    ids = [ObjectId() for _ in range(600)]
    for count in (2, 3, 5):
        workers = ["w%d@host" % i for i in range(count)]
        owners = {i: owner_of(i, workers) for i in ids}
        spread = collections.Counter(owners.values())
        assert sorted(spread) == workers
        assert min(spread.values()) > len(ids) / count / 2
        # a worker gone: only its jobs change owner
        after = {i: owner_of(i, workers[1:]) for i in ids}
        moved = {i for i in ids if after[i] != owners[i]}
        assert moved == {i for i in ids if owners[i] == workers[0]}
    assert owner_of("not-an-object-id", ["a", "b"]) in ("a", "b")


def test_two_workers_claim_disjoint_jobs_without_losing_a_claim(queue):
    ids = enqueue_many(queue, 40)
    first, second = sharing(queue, A, B)
    mine = {c.id for c in first.next_candidates()}
    theirs = {c.id for c in second.next_candidates()}
    # each offers only its own, about half each, together every job
    assert not mine & theirs and mine | theirs == set(ids)
    assert 8 <= len(mine) <= 32  # (a random split: 4 in 100,000 fail)
    won = first.claim(first.next_candidates()) + \
        second.claim(second.next_candidates())
    assert sorted(doc["_id"] for doc in won) == sorted(ids)
    assert (first.lost, second.lost) == (0, 0)
    assert {doc["locked"]["worker"] for doc in won if doc["_id"] in mine} \
        == {A}


def test_a_worker_takes_the_others_jobs_after_a_new_scan(queue):
    """Once a worker's own jobs are taken it scans again, and then claims
    what the others left: no job waits for an owner that is busy (or gone
    without its registration knowing yet)."""
    ids = enqueue_many(queue, 30)
    (first,) = sharing(queue, A)
    first.share([A, B])
    first.scan()
    own = first.next_candidates()
    assert own and all(c.mine for c in own)
    first.claim(own)
    assert first.scan_due()  # its own are gone: what is left?
    first.scan()
    left = first.next_candidates()
    assert {c.id for c in left} == set(ids) - {c.id for c in own}
    assert not any(c.mine for c in left)
    first.claim(left)
    assert queue.sys.queue.count_documents({"state": states.RUNNING}) == 30
    assert first.lost == 0


def test_priority_comes_before_ownership(queue):
    """A job of higher priority comes first whoever owns it; within a
    priority a worker's own jobs come first."""
    low = enqueue_many(queue, 30)
    high = enqueue_many(queue, 2, priority=5)
    (first,) = sharing(queue, A)
    first.share([A, B])
    first.own_scanned = False  # (candidates learnt from hints)
    order = first.next_candidates()
    assert {c.id for c in order[:2]} == set(high)
    rest = order[2:]
    assert {c.id for c in rest} == set(low)
    flags = [c.mine for c in rest]
    assert flags == sorted(flags, reverse=True)  # own ones first
    assert True in flags and False in flags


def test_a_job_meant_for_a_worker_is_its_own(queue):
    queue.enqueue(DUMMY, sleep=0.5, worker=B)
    first, second = sharing(queue, A, B)
    assert first.next_candidates() == []  # (another worker's job)
    (candidate,) = second.next_candidates()
    assert candidate.mine


def hint(_id, state="pending", priority=0):
    return Hint(_id, state, 0, None, priority, False, DUMMY, None)


def test_another_workers_hinted_job_waits_a_grace(queue, monkeypatch):
    """A job learnt from the change stream that another worker owns is
    offered after a grace, when its owner had the time to claim it; a hint
    that it was taken (its claim) drops it."""
    monkeypatch.setattr(claim, "FOREIGN_GRACE", 60.0)  # (a busy machine)
    monkeypatch.setattr(claim, "STALE_AFTER", 600.0)
    first = Claimer(queue, A)
    first.share([A, B])
    ids = [ObjectId() for _ in range(30)]
    for _id in ids:
        assert first.hint(hint(_id))
    own = [i for i in ids if first.owns(i)]
    other = [i for i in ids if not first.owns(i)]
    assert own and other
    assert [c.id for c in first.next_candidates()] == sorted(own)
    assert 0 < first.seconds_to_offer() <= 60.0
    # one of the others' is claimed by its owner meanwhile
    assert not first.hint(hint(other[0], state=states.RUNNING))
    for candidate in first.candidates.values():
        candidate.after -= 60.0  # (the grace passed)
    assert first.seconds_to_offer() == 0
    assert first.seconds_to_offer() is None  # (reported once)
    offered = [c.id for c in first.next_candidates()]
    assert offered == sorted(own) + sorted(other[1:])


def test_two_idle_workers_share_new_jobs_out(core4_env, db, start_worker):
    """Two real idle workers get 40 jobs one after the other by their
    change streams: both run some, and few claims are lost to the other
    worker (before the jobs were shared out, both claimed every job and
    one of the two claims was lost). Each worker publishes its claims won
    and lost in ``sys_worker``."""
    workers = [start_worker("share1"), start_worker("share2")]
    # each has seen the other, and the first one's change stream (opened
    # while it was alone) has reopened with the claims of jobs
    for worker in workers:
        let_worker_cycle(db, worker, beats=5)
    queue = CoreQueue()
    count = 40
    for i in range(count):
        queue.enqueue(NOOP, i=i)
        wait_for(lambda: db.sys_journal.count_documents({}) > i, 60,
                 message="job %d to run" % i)

    def published():
        docs = list(db.sys_worker.find({"kind": "worker"}))
        claims = [doc.get("claims") or {} for doc in docs]
        if len(docs) == 2 and sum(c.get("won", 0) for c in claims) >= count:
            return claims
        return None
    claims = wait_for(published, 60, message="the claims in sys_worker")
    assert all(c["won"] > 0 for c in claims), claims  # both ran jobs
    assert sum(c["lost"] for c in claims) < count / 2, claims
    for worker in workers:
        assert worker.proc.poll() is None, worker.output()[-2000:]


def test_a_busy_owners_jobs_are_taken_after_a_while(queue):
    """Jobs of another worker seen in a scan and not claimed since (their
    owner is busy with long jobs, say) come first like own ones after
    ``STALE_AFTER``, in FIFO order."""
    ids = enqueue_many(queue, 30)
    (first,) = sharing(queue, A)
    first.share([A, B])
    first.scan()
    own = [c.id for c in first.next_candidates()]
    assert own and all(first.owns(i) for i in own)
    assert not first.scan_due()
    for candidate in first.candidates.values():
        candidate.since -= claim.STALE_AFTER  # (seen a while ago)
    first.scan()  # (a rescan keeps when a job was first seen)
    assert [c.id for c in first.next_candidates()] == sorted(ids)


def test_all_own_claims_lost_rescans(queue):
    """When every own job this worker tried was taken meanwhile, the next
    claim pass scans again instead of waiting for the fallback poll (and
    then takes what is left)."""
    enqueue_many(queue, 30)
    first, second = sharing(queue, A, B)
    mine = first.next_candidates()
    second.share([B])  # (it believes it is alone: it takes everything)
    second.scan()
    second.claim(second.next_candidates())
    assert first.claim(mine) == [] and first.lost == len(mine)
    assert first.scan_due()
