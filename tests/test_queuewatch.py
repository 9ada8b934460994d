"""The change stream that wakes workers (core4.queue.wakeup.QueueWatch),
on every backend: which events become hints, and what a hint carries."""

import datetime
import logging
import select

import pytest
from bson import ObjectId

from core4.mongo import now, seconds
from core4.queue.wakeup import QueueWatch
from tests.support import wait_for

LOG = logging.getLogger("tests.queuewatch")


@pytest.fixture
def watch(fidelity_env):
    """A QueueWatch on the test database's sys_queue, open and idle."""
    coll = fidelity_env.client()[fidelity_env.database].sys_queue
    coll.insert_one({"_id": "init"})  # the collection exists
    queue_watch = QueueWatch(coll, LOG)
    queue_watch.claims = True  # (as with other workers)
    queue_watch.start()
    wait_for(lambda: queue_watch.open, 30, message="the change stream")
    queue_watch.take()
    yield coll, queue_watch
    queue_watch.close()


def hints_for(queue_watch, key, count=1, timeout=30):
    """Wait (on the wake-up descriptor) for ``count`` hints of job ``key``."""
    found = []

    def arrived():
        select.select([queue_watch.fileno()], [], [], 0.2)
        found.extend(h for h in queue_watch.take() if h.id == key)
        return len(found) >= count
    wait_for(arrived, timeout, message="%d hint(s) of %s" % (count, key))
    return found


def job(**fields):
    doc = {"_id": ObjectId(), "name": "p.m.Job", "state": "pending",
           "trial": 0, "priority": 0, "force": False, "query_at": now()}
    doc.update(fields)
    return doc


def test_insert_of_a_pending_job_is_a_hint(watch):
    coll, queue_watch = watch
    doc = job(priority=5, force=True, max_parallel=3)
    coll.insert_one(doc)
    hint = hints_for(queue_watch, doc["_id"])[0]
    assert hint.state == "pending" and hint.trial == 0
    assert hint.max_parallel == 3
    assert hint.priority == 5 and hint.force is True
    assert hint.name == "p.m.Job"
    assert abs((hint.query_at - doc["query_at"]).total_seconds()) < 0.002


def test_only_claimable_changes_and_claims_wake(watch):
    coll, queue_watch = watch
    doc = job()
    coll.insert_one(doc)
    hints_for(queue_watch, doc["_id"])
    # claimed: a hint that the job was taken (and nothing claimable about
    # its heartbeat or progress)
    coll.update_one({"_id": doc["_id"]}, {"$set": {"state": "running"}})
    coll.update_one({"_id": doc["_id"]},
                    {"$set": {"locked.heartbeat": now(), "prog.value": 0.5}})
    # failed with a retry in 10 minutes: a hint that says when
    retry = now() + seconds(600)
    coll.update_one({"_id": doc["_id"]},
                    {"$set": {"state": "failed", "query_at": retry}})
    found = []

    def claimable_arrived():
        select.select([queue_watch.fileno()], [], [], 0.2)
        found.extend(h for h in queue_watch.take() if h.id == doc["_id"])
        return any(h.state != "running" for h in found)
    wait_for(claimable_arrived, 30, message="the retry's hint")
    taken = found[0]
    assert taken.state == "running" and taken.priority is None
    # the first claimable hint after the insert is the retry
    hint = [h for h in found if h.state != "running"][0]
    assert hint.query_at is None or \
        abs((hint.query_at - retry).total_seconds()) < 0.002
    assert hint.state in (None, "failed")
    # a job inserted in a final state never wakes a worker
    done = job(state="complete")
    coll.insert_one(done)
    marker = job()
    coll.insert_one(marker)
    seen = hints_for(queue_watch, marker["_id"])
    assert seen and all(h.id != done["_id"] for h in seen)


def test_a_worker_alone_follows_claims_only_once_it_has_peers(
        fidelity_env):
    """A worker alone has no use for the claims of jobs: its stream leaves
    them out (on the embedded server, every update of a running job would
    come). Once it shares jobs out, the stream reopens with them."""
    coll = fidelity_env.client()[fidelity_env.database].sys_queue
    coll.insert_one({"_id": "init"})
    queue_watch = QueueWatch(coll, LOG)
    queue_watch.await_ms = 300  # (reopens after at most that)
    queue_watch.start()
    try:
        wait_for(lambda: queue_watch.open, 30, message="the change stream")
        first, marker = job(), job()
        coll.insert_one(first)
        coll.update_one({"_id": first["_id"]}, {"$set": {"state": "running"}})
        coll.insert_one(marker)
        seen = []

        def marker_arrived():
            select.select([queue_watch.fileno()], [], [], 0.2)
            seen.extend(queue_watch.take())
            return any(h.id == marker["_id"] for h in seen)
        wait_for(marker_arrived, 30, message="the marker's hint")
        assert [h.state for h in seen if h.id == first["_id"]] == ["pending"]
        generation = queue_watch.generation
        queue_watch.want(True, claims=True)
        wait_for(lambda: queue_watch.generation > generation and
                 queue_watch.open, 30, message="the stream reopened")
        second = job()
        coll.insert_one(second)
        coll.update_one({"_id": second["_id"]},
                        {"$set": {"state": "running"}})
        found = hints_for(queue_watch, second["_id"], count=2)
        assert [h.state for h in found] == ["pending", "running"]
    finally:
        queue_watch.close()


def test_a_restarted_job_wakes(watch):
    coll, queue_watch = watch
    doc = job(state="deferred", query_at=now() + datetime.timedelta(days=1))
    coll.insert_one(doc)
    hints_for(queue_watch, doc["_id"])
    coll.update_one({"_id": doc["_id"]}, {"$set": {"query_at": now()}})
    hint = hints_for(queue_watch, doc["_id"])[0]
    assert hint.query_at is None or hint.query_at <= now()
