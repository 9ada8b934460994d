"""Tests of core4.queue.queue.CoreQueue and core4.queue.lifecycle.

Every test runs on each backend of ``fidelity_env`` (NX-27017, SecantusDB and,
with ``CORE4_TEST_MONGO_URL``, a real MongoDB), so no queue semantics rely on
an NX quirk. Jobs in other states than pending are produced the way a worker
produces them: a claim through :func:`lifecycle.claim_by_id`, then a
lifecycle transition. Times in job documents are BSON datetimes (UTC,
milliseconds), read back tz-aware.
"""

import concurrent.futures
import datetime
import getpass
import os
import socket

import pymongo
import pytest

from core4.queue.loader import make_job
from bson import ObjectId

from core4.error import Core4UserError, CoreJobExists, CoreJobNotFound
from core4.mongo import find_index, now
from core4.mongo import seconds as secs
from core4.queue import lifecycle, states
from core4.queue.helper.job import DummyJob
from core4.queue.job import args_hash
from core4.queue.queue import CoreQueue

DUMMY = "core4.queue.helper.job.example.DummyJob"
WORKER = "w@h"
#: seconds a time written "now" by core4 may differ from this test's clock
SLACK = 30.0


@pytest.fixture
def queue(fidelity_env):
    """A CoreQueue on a fresh database of the backend under test."""
    return CoreQueue()


def user_name():
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def near_now(value, slack=SLACK):
    """True if ``value`` is an aware datetime close to the current time."""
    return (isinstance(value, datetime.datetime)
            and value.tzinfo is not None
            and abs((value - now()).total_seconds()) < slack)


def claim(queue, _id):
    """Claim a job as a worker would; return the running document."""
    doc = lifecycle.claim_by_id(queue, _id, WORKER)
    assert doc is not None, "claim of %s failed" % _id
    assert doc["state"] == states.RUNNING
    return doc


def stopped_job(queue, state, sleep):
    """Enqueue a job and bring it into ``state`` through the lifecycle;
    return the queue document."""
    if state == states.FAILED:
        job = queue.enqueue(DummyJob, attempts=2, sleep=sleep)
        after = lifecycle.set_failed(queue, claim(queue, job._id),
                                     message="boom")
    elif state == states.DEFERRED:
        job = queue.enqueue(DummyJob, sleep=sleep)
        after = lifecycle.set_deferred(queue, claim(queue, job._id),
                                       "later")
    elif state == states.KILLED:
        job = queue.enqueue(DummyJob, attempts=3, sleep=sleep)
        after = lifecycle.set_killed(queue, claim(queue, job._id))
    elif state == states.ERROR:
        job = queue.enqueue(DummyJob, attempts=1, sleep=sleep)
        after = lifecycle.set_failed(queue, claim(queue, job._id),
                                     message="boom")
    elif state == states.INACTIVE:
        # defer_max has passed by the time the job defers
        job = queue.enqueue(DummyJob, defer_max=1e-6, sleep=sleep)
        after = lifecycle.set_deferred(queue, claim(queue, job._id),
                                       "later")
    else:
        raise ValueError(state)
    assert after is not None and after["state"] == state, after
    return after


# enqueue ---------------------------------------------------------------------

def test_enqueue_stores_pending_document(fidelity_env, queue):
    before = now()
    job = queue.enqueue(DummyJob, sleep=1, loop_time=0.1)
    doc = fidelity_env.db().sys_queue.find_one({"_id": job._id})
    assert doc is not None
    assert doc["name"] == DUMMY
    assert doc["args"] == {"sleep": 1, "loop_time": 0.1}
    assert doc["_hash"] == args_hash({"loop_time": 0.1, "sleep": 1})
    assert doc["state"] == states.PENDING
    assert doc["attempts"] == 1 and doc["attempts_left"] == 1
    assert doc["trial"] == 0
    assert near_now(doc["query_at"]) and doc["query_at"] >= before - secs(1)
    assert near_now(doc["enqueued"]["at"])
    assert doc["enqueued"]["hostname"] == socket.gethostname()
    assert doc["enqueued"]["username"] == user_name()
    assert doc["prog"]["value"] == 0.0
    for field in ("locked", "started_at", "finished_at", "killed_at",
                  "last_error"):
        assert field not in doc, field
    # the returned job carries what was stored
    assert job.state == states.PENDING and job._id == doc["_id"]

    other = queue.submit(make_job(DUMMY, attempts=3, sleep=2), by="alice")
    doc = fidelity_env.db().sys_queue.find_one({"_id": other._id})
    assert doc["attempts"] == 3 and doc["attempts_left"] == 3
    assert doc["enqueued"]["username"] == "alice"


def test_times_are_datetimes_for_a_plain_client(fidelity_env, queue):
    """What a user sees with a plain pymongo client (not tz-aware): every
    time of a job is a ``datetime`` (naive, UTC), and the user's queries
    with datetimes find the job."""
    before = now() - secs(1)
    job = queue.enqueue(DummyJob, sleep=1)
    at = now()
    client = pymongo.MongoClient(fidelity_env.url)
    try:
        coll = client[fidelity_env.database].sys_queue

        def assert_time(value):
            assert isinstance(value, datetime.datetime), value
            assert value.tzinfo is None      # a plain client reads naive UTC
            assert near_now(value.replace(tzinfo=datetime.timezone.utc))

        def found(query):
            return [d["_id"] for d in coll.find(query)]

        doc = coll.find_one({"_id": job._id})
        assert_time(doc["enqueued"]["at"])
        assert_time(doc["query_at"])
        # aware and naive (UTC) datetimes in a query both work
        for bound in (before, before.replace(tzinfo=None)):
            assert found({"enqueued.at": {"$gte": bound}}) == [job._id]
        for bound in (at, at.replace(tzinfo=None)):
            assert found({"query_at": {"$lte": bound}}) == [job._id]
        # the comparison is exact to the millisecond, not to the second
        stored = doc["enqueued"]["at"]
        assert found({"enqueued.at": {"$gte": stored}}) == [job._id]
        assert found({"enqueued.at": {"$gt": stored}}) == []
        assert found({"enqueued.at": {
            "$gt": stored + datetime.timedelta(milliseconds=1)}}) == []
        later = at + secs(60)
        for later in (later, later.replace(tzinfo=None)):
            assert found({"enqueued.at": {"$gt": later}}) == []
            assert found({"query_at": {"$gt": later}}) == []

        assert queue.kill(job._id) is True
        doc = coll.find_one({"_id": job._id})
        assert doc["state"] == states.KILLED
        assert_time(doc["killed_at"])
        assert_time(doc["finished_at"])
        assert doc["killed_at"] >= doc["enqueued"]["at"]
        assert found({"killed_at": {"$gte": before}}) == [job._id]
        assert found({"finished_at": {"$lte": now()}}) == [job._id]
        assert found({"killed_at": {"$gt": now() + secs(60)}}) == []
    finally:
        client.close()


def test_same_name_and_args_is_refused(queue):
    first = queue.enqueue(DummyJob, sleep=1, loop_time=0.2)
    # the same args in another order are the same job
    with pytest.raises(CoreJobExists):
        queue.enqueue(DUMMY, loop_time=0.2, sleep=1)
    assert isinstance(CoreJobExists("x"), Core4UserError)
    second = queue.enqueue(DummyJob, sleep=2, loop_time=0.2)
    assert second._id != first._id
    assert queue.counts() == {states.PENDING: 2}
    # the refused enqueue left no events
    enqueued = {doc["data"]["_id"] for doc in queue.sys.event.find(
        {"name": "enqueue_job"})}
    assert enqueued == {first._id, second._id}
    audited = list(queue.sys.event.find({"name": "enqueue"}))
    assert len(audited) == 2, audited
    # once the job has left the queue it can be enqueued again
    assert queue.remove_hard(first._id) is True
    again = queue.enqueue(DummyJob, sleep=1, loop_time=0.2)
    assert again._id != first._id


def test_unique_index_on_name_and_hash(queue):
    queue.setup()
    name = find_index(queue.sys.queue, [("name", 1), ("_hash", 1)])
    assert name is not None
    assert queue.sys.queue.index_information()[name].get("unique") is True


# kill ------------------------------------------------------------------------

def test_kill_pending_job_at_once(queue):
    job = queue.enqueue(DummyJob, sleep=1)
    assert queue.kill(str(job._id)) is True
    doc = queue.sys.queue.find_one({"_id": job._id})
    assert doc["state"] == states.KILLED
    assert near_now(doc["killed_at"])
    assert doc["last_error"]["exception"]
    assert "locked" not in doc


def test_kill_running_job_is_a_request(queue):
    job = queue.enqueue(DummyJob, sleep=1)
    running = claim(queue, job._id)
    assert queue.kill(job._id) is True
    doc = queue.sys.queue.find_one({"_id": job._id})
    assert doc["state"] == states.RUNNING
    assert near_now(doc["killed_at"])
    assert doc["locked"]["token"] == running["locked"]["token"]
    assert "last_error" not in doc


def test_kill_complete_or_unknown_job_is_false(queue):
    job = queue.enqueue(DummyJob, sleep=1)
    assert lifecycle.set_complete(queue, claim(queue, job._id)) is not None
    assert queue.kill(job._id) is False
    assert queue.kill(ObjectId()) is False
    with pytest.raises(Core4UserError):
        queue.kill("not-an-id")
    assert queue.sys.journal.find_one({"_id": job._id})["state"] \
        == states.COMPLETE


# restart ---------------------------------------------------------------------

@pytest.mark.parametrize("state", [states.FAILED, states.DEFERRED])
def test_restart_waiting_job_keeps_id_and_runs_now(queue, state):
    old = stopped_job(queue, state, sleep=1)
    assert old["query_at"] > now() + secs(60)  # waits error/defer time
    assert queue.restart(old["_id"]) == old["_id"]
    doc = queue.sys.queue.find_one({"_id": old["_id"]})
    assert doc["state"] == state
    assert near_now(doc["query_at"]) and doc["query_at"] <= now()
    assert queue.counts() == {state: 1}
    assert queue.sys.journal.find_one({"_id": old["_id"]}) is None


@pytest.mark.parametrize("state", [states.KILLED, states.ERROR,
                                   states.INACTIVE])
def test_restart_stopped_job_enqueues_child(queue, state):
    old = stopped_job(queue, state, sleep=1)
    assert old["trial"] == 1
    child_id = queue.restart(str(old["_id"]))
    assert isinstance(child_id, ObjectId) and child_id != old["_id"]

    assert queue.sys.queue.find_one({"_id": old["_id"]}) is None
    journaled = queue.sys.journal.find_one({"_id": old["_id"]})
    assert journaled["state"] == state
    assert journaled["enqueued"]["child_id"] == child_id

    child = queue.sys.queue.find_one({"_id": child_id})
    assert child["state"] == states.PENDING
    assert child["enqueued"]["parent_id"] == old["_id"]
    assert child["name"] == old["name"] and child["args"] == old["args"]
    assert child["attempts_left"] == old["attempts"]
    assert child["trial"] == old["trial"]
    assert near_now(child["query_at"]) and child["query_at"] <= now()
    for field in ("locked", "last_error", "killed_at", "started_at",
                  "finished_at", "inactive_at"):
        assert field not in child, field
    assert queue.children(old["_id"]) == [child_id]
    # the child can run: a worker can claim it
    assert claim(queue, child_id)["trial"] == old["trial"] + 1


def test_restart_pending_or_running_is_none(queue):
    pending = queue.enqueue(DummyJob, sleep=1)
    running = queue.enqueue(DummyJob, sleep=2)
    claim(queue, running._id)
    assert queue.restart(pending._id) is None
    assert queue.restart(running._id) is None
    assert queue.restart(ObjectId()) is None
    assert queue.counts() == {states.PENDING: 1, states.RUNNING: 1}
    assert queue.sys.journal.find_one({}) is None


def test_restart_twice_creates_one_child(queue):
    old = stopped_job(queue, states.KILLED, sleep=1)
    child = queue.restart(old["_id"])
    assert child is not None
    assert queue.restart(old["_id"]) in (None, child)
    assert queue.children(old["_id"]) == [child]

    # two restarts racing each other
    other = stopped_job(queue, states.ERROR, sleep=2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(queue.restart, [other["_id"]] * 2))
    made = {r for r in results if r is not None}
    assert len(made) == 1, results
    assert queue.children(other["_id"]) == list(made)
    assert queue.counts() == {states.PENDING: 2}


# remove ----------------------------------------------------------------------

def test_remove_pending_job_journals_it(queue):
    job = queue.enqueue(DummyJob, sleep=1)
    assert queue.remove(job._id) is True
    assert queue.sys.queue.find_one({"_id": job._id}) is None
    doc = queue.sys.journal.find_one({"_id": job._id})
    assert doc is not None and near_now(doc["removed_at"])
    assert queue.remove(job._id) is False


def test_remove_running_job_lets_it_run(queue):
    job = queue.enqueue(DummyJob, sleep=1)
    claim(queue, job._id)
    assert queue.remove(job._id) is True
    doc = queue.sys.queue.find_one({"_id": job._id})
    assert doc["state"] == states.RUNNING
    assert near_now(doc["removed_at"]) and "killed_at" not in doc
    assert queue.sys.journal.find_one({"_id": job._id}) is None


def test_remove_hard_deletes_at_once(queue):
    job = queue.enqueue(DummyJob, sleep=1)
    claim(queue, job._id)
    assert queue.remove_hard(job._id) is True
    assert queue.sys.queue.find_one({"_id": job._id}) is None
    doc = queue.sys.journal.find_one({"_id": job._id})
    assert doc["state"] == "removed" and near_now(doc["removed_at"])
    assert queue.remove_hard(job._id) is False


# control ---------------------------------------------------------------------

def test_pause_and_resume_all(queue):
    assert queue.maintenance() == {"global": False, "projects": []}
    assert queue.in_maintenance(DUMMY) is False
    queue.pause()
    assert queue.maintenance()["global"] is True
    assert queue.in_maintenance(DUMMY) is True
    assert queue.in_maintenance("other.mod.Job") is True
    queue.resume()
    assert queue.maintenance() == {"global": False, "projects": []}
    assert queue.in_maintenance(DUMMY) is False


def test_pause_and_resume_project(queue):
    queue.pause("core4")
    queue.pause("core4")
    assert queue.maintenance() == {"global": False, "projects": ["core4"]}
    assert queue.in_maintenance(DUMMY) is True
    assert queue.in_maintenance("other.mod.Job") is False
    queue.resume("core4")
    assert queue.maintenance() == {"global": False, "projects": []}
    assert queue.in_maintenance(DUMMY) is False


def test_pause_project_after_global_pause(queue):
    """A project pause must work whatever was paused before (the
    maintenance document then exists without a ``projects`` list)."""
    queue.pause()
    queue.resume()
    queue.pause("core4")
    assert queue.maintenance() == {"global": False, "projects": ["core4"]}
    assert queue.in_maintenance(DUMMY) is True
    assert queue.in_maintenance("other.mod.Job") is False


def test_halt(queue):
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    assert queue.halted_since(epoch) is False
    before = now() - secs(1.0)
    at = queue.halt()
    assert near_now(at)
    assert queue.halted_since(before) is True
    assert queue.halted_since(at + secs(1.0)) is False


# lookup ----------------------------------------------------------------------

def test_detail_from_queue_then_journal(queue):
    job = queue.enqueue(DummyJob, force=True, sleep=1)
    doc = queue.detail(str(job._id))
    assert doc["_id"] == job._id and doc["state"] == states.PENDING
    assert "journaled" not in doc
    assert doc["force"] is True
    lifecycle.set_complete(queue, claim(queue, job._id))
    doc = queue.detail(job._id)
    assert doc["journaled"] is True and doc["state"] == states.COMPLETE
    assert queue.detail(ObjectId()) is None


def test_listing_and_counts(queue):
    jobs = [queue.enqueue(DummyJob, sleep=n) for n in (1, 2, 3)]
    claim(queue, jobs[1]._id)
    queue.kill(jobs[2]._id)
    assert [d["_id"] for d in queue.listing()] == [j._id for j in jobs]
    assert [d["_id"] for d in queue.listing(states.PENDING)] == [jobs[0]._id]
    assert [d["_id"] for d in queue.listing(
        states.PENDING, states.KILLED)] == [jobs[0]._id, jobs[2]._id]
    assert queue.listing(states.ERROR) == []
    assert queue.counts() == {states.PENDING: 1, states.RUNNING: 1,
                              states.KILLED: 1}


def test_resolve(queue):
    first = queue.enqueue(DummyJob, sleep=1)
    second = queue.enqueue(DummyJob, sleep=2)
    assert queue.resolve(str(first._id)) == [first._id]
    assert queue.resolve(first._id) == [first._id]
    assert sorted(queue.resolve(DUMMY)) == sorted([first._id, second._id])
    with pytest.raises(Core4UserError):
        queue.resolve("12345")
    with pytest.raises(CoreJobNotFound):
        queue.resolve("nothing.here.Job")


# lifecycle -------------------------------------------------------------------

def _started_ago(queue, doc, seconds):
    """Pretend the running job started ``seconds`` ago."""
    started = now() - secs(seconds)
    queue.sys.queue.update_one({"_id": doc["_id"]},
                               {"$set": {"started_at": started}})
    return dict(doc, started_at=started)


def test_set_complete_journals_and_accumulates_runtime(queue):
    job = queue.enqueue(DummyJob, attempts=2, sleep=1)
    first = _started_ago(queue, claim(queue, job._id), 5.0)
    failed = lifecycle.set_failed(queue, first, message="boom")
    assert failed["state"] == states.FAILED
    assert 4.5 < failed["runtime"] < 5.0 + SLACK
    assert queue.restart(job._id) == job._id

    second = _started_ago(queue, claim(queue, job._id), 3.0)
    assert second["trial"] == 2
    done = lifecycle.set_complete(queue, second)
    assert done is not None and done["state"] == states.COMPLETE
    assert queue.sys.queue.find_one({"_id": job._id}) is None
    doc = queue.sys.journal.find_one({"_id": job._id})
    assert doc["state"] == states.COMPLETE
    assert doc["prog"]["value"] == 1.0
    assert near_now(doc["finished_at"])
    assert "locked" not in doc
    expected = failed["runtime"] + (
        doc["finished_at"] - second["started_at"]).total_seconds()
    assert doc["runtime"] == pytest.approx(expected, abs=0.01)
    assert doc["runtime"] > 7.5


def test_stale_lease_changes_nothing(queue):
    job = queue.enqueue(DummyJob, attempts=3, sleep=1)
    lost = claim(queue, job._id)
    # the job was recovered (failed) and claimed again by another worker
    assert lifecycle.set_failed(queue, lost, message="worker died")
    current = claim(queue, job._id)
    assert current["locked"]["token"] != lost["locked"]["token"]

    assert lifecycle.set_complete(queue, lost) is None
    assert lifecycle.set_failed(queue, lost, message="late") is None
    assert lifecycle.set_killed(queue, lost) is None
    lifecycle.record_progress(queue, lost, 0.9, "late")
    doc = queue.sys.queue.find_one({"_id": job._id})
    assert doc["state"] == states.RUNNING
    assert doc["locked"]["token"] == current["locked"]["token"]
    assert doc["prog"]["value"] == 0.0
    assert queue.sys.journal.find_one({"_id": job._id}) is None
    # the current lease still works
    assert lifecycle.set_complete(queue, current)["state"] == states.COMPLETE
