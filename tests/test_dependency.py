"""Tests of job dependencies, chains and events: real ``coco --worker``
processes (one per test, see tests/support.py) run the jobs of
tests/djobs against the session's NX-27017 server (fixture ``core4_env``).

NX-27017 gap: equality on an ObjectId in a field other than ``_id`` matches
nothing, so such fields are queried with ``$in`` or filtered in Python.
"""

import datetime
import subprocess
import sys

import pytest
from bson import ObjectId

from core4.config import get_config
from core4.error import CoreJobInvalid
from core4.mongo import find_index
from core4.queue.dependency import WAITING_AT
from core4.queue.queue import CoreQueue
from tests.support import (ROOT, WorkerProcess, wait_for, wait_state,
                           worker_env)

J = "tests.djobs.j."


# helpers -------------------------------------------------------------------

@pytest.fixture
def worker(core4_env, db, tmp_path, request):
    """``worker()`` starts the test's one worker, waits until its loop runs
    and stops it (and its job processes) in a finalizer."""
    def start():
        proc = WorkerProcess("dep", env=worker_env(), log_dir=str(tmp_path))
        request.addfinalizer(proc.stop)
        try:
            proc.wait_registered(db, 20)
        except AssertionError:
            raise AssertionError("worker did not register; log:\n%s"
                                 % proc.output()[-2000:])
        return proc
    return start


def enqueue(name, **kwargs):
    """Enqueue a job of tests/djobs (short name) or a qualified name."""
    if "." not in name:
        name = J + name
    return CoreQueue().enqueue(name, **kwargs)






def worker_passes(db, seconds=1.0):
    """Wait (polling) until the worker's heartbeat (a datetime) shows it
    looped for ``seconds`` more: its check step (every 0.2 s) has run
    several times."""
    def heartbeat():
        return (db.sys_worker.find_one(
            {"_id": {"$regex": "^dep@"}}) or {}).get("heartbeat")

    start = wait_for(heartbeat, message="a worker heartbeat")
    assert isinstance(start, datetime.datetime), start
    until = start + datetime.timedelta(seconds=seconds)
    wait_for(lambda: (heartbeat() or start) >= until, 10,
             message="the worker to loop on")


def jobs_named(db, name):
    """Documents of the job ``name`` in the queue and the journal, one per
    ``_id`` (a job being journaled is briefly in both)."""
    found = {}
    for coll in (db.sys_journal, db.sys_queue):
        for doc in coll.find({"name": name}):
            found.setdefault(doc["_id"], doc)
    return list(found.values())


def events_for(db, _id):
    """The events of job ``_id`` (``data._id`` via ``$in``: the NX gap),
    ordered by ``created``."""
    found = list(db.sys_event.find({"data._id": {"$in": [_id]}}))
    return sorted(found, key=lambda event: event["created"])


def assert_waiting(db, _id, waiting_for):
    doc = db.sys_queue.find_one({"_id": _id})
    assert doc is not None, "job %s not in the queue" % _id
    assert doc["state"] == "pending", doc
    assert doc.get("waiting_for") == waiting_for, doc
    assert doc["prog"]["message"] == "waiting for %s" % ", ".join(
        waiting_for), doc
    assert doc["query_at"] == WAITING_AT, doc
    assert "started_at" not in doc, doc
    return doc


def open_gate(db, key):
    db.d_gate.insert_one({"_id": key})


def coco(*args):
    return subprocess.run(
        [sys.executable, "-m", "core4.script.coco", *args],
        capture_output=True, text=True, timeout=30, env=worker_env(),
        cwd=ROOT, stdin=subprocess.DEVNULL)


# dependencies --------------------------------------------------------------

def test_dependency_on_name_waits_until_it_completes(db, worker):
    proc = worker()
    b = enqueue("B")
    assert b.state == "pending"
    assert_waiting(db, b._id, [J + "A"])
    worker_passes(db)
    # A was never enqueued: B still waits
    assert_waiting(db, b._id, [J + "A"])
    a = enqueue("A")
    a_doc = wait_state(db, a._id, "complete", worker=proc)
    b_doc = wait_state(db, b._id, "complete", worker=proc)
    assert "waiting_for" not in b_doc
    assert b_doc["started_at"] >= a_doc["finished_at"], (a_doc, b_doc)


def test_dependency_on_job_id_waits_until_it_completes(db, worker):
    gated = enqueue("Gated", key="byid")
    c = enqueue("C", dependency=[str(gated._id)])
    assert_waiting(db, c._id, [str(gated._id)])
    proc = worker()
    wait_state(db, gated._id, "running", worker=proc)
    worker_passes(db)
    assert_waiting(db, c._id, [str(gated._id)])
    open_gate(db, "byid")
    g_doc = wait_state(db, gated._id, "complete", worker=proc)
    c_doc = wait_state(db, c._id, "complete", worker=proc)
    assert c_doc["started_at"] >= g_doc["finished_at"], (g_doc, c_doc)


def test_failed_dependency_makes_dependent_error(db, worker):
    proc = worker()
    fail = enqueue("Fail")
    dependent = enqueue("OnFail")
    f_doc = wait_state(db, fail._id, "error", "failed", worker=proc)
    assert f_doc["state"] == "error", f_doc
    d_doc = wait_state(db, dependent._id, "error", "complete", worker=proc)
    assert d_doc["state"] == "error", d_doc
    message = d_doc["last_error"]["exception"]
    assert J + "Fail" in message and "error" in message, message
    assert "started_at" not in d_doc, d_doc   # it never ran


def test_killed_dependency_makes_dependents_error(db, worker):
    killed = enqueue("Killed")
    by_name = enqueue("OnKilled")
    by_id = enqueue("C", dependency=[str(killed._id)])
    assert CoreQueue().kill(killed._id) is True
    assert db.sys_queue.find_one({"_id": killed._id})["state"] == "killed"
    proc = worker()
    for _id, named in ((by_name._id, J + "Killed"),
                       (by_id._id, str(killed._id))):
        doc = wait_state(db, _id, "error", "complete", worker=proc)
        assert doc["state"] == "error", doc
        message = doc["last_error"]["exception"]
        assert named in message and "killed" in message, message
        assert "started_at" not in doc, doc


def test_restart_after_broken_dependency_waits_again(db, worker):
    queue = CoreQueue()
    proc = worker()
    flaky = enqueue("Flaky")
    dependent = enqueue("OnFlaky")
    wait_state(db, flaky._id, "error", worker=proc)
    old = wait_state(db, dependent._id, "error", worker=proc)
    assert J + "Flaky" in old["last_error"]["exception"], old
    new_flaky = queue.restart(flaky._id)      # runs, then blocks at its gate
    new_dep = queue.restart(dependent._id)
    assert new_dep is not None and new_dep != dependent._id
    doc = db.sys_queue.find_one({"_id": new_dep})
    assert doc["state"] == "pending", doc
    assert doc.get("waiting_for") == [J + "Flaky"], doc
    assert doc["query_at"] == WAITING_AT, doc
    assert doc["enqueued"]["parent_id"] == dependent._id, doc
    wait_state(db, new_flaky, "running", worker=proc)
    worker_passes(db)
    assert_waiting(db, new_dep, [J + "Flaky"])
    open_gate(db, "flaky")
    f_doc = wait_state(db, new_flaky, "complete", worker=proc)
    d_doc = wait_state(db, new_dep, "complete", "error", worker=proc)
    assert d_doc["state"] == "complete", d_doc
    assert d_doc["started_at"] >= f_doc["finished_at"]


# chains --------------------------------------------------------------------

def test_chain_enqueues_after_complete(db, worker):
    proc = worker()
    parent = enqueue("Chained")
    p_doc = wait_state(db, parent._id, "complete", worker=proc)
    children = wait_for(lambda: jobs_named(db, J + "C"),
                        message="the chained job C")
    assert len(children) == 1, children
    child = children[0]
    assert child["enqueued"]["parent_id"] == parent._id, child
    c_doc = wait_state(db, child["_id"], "complete", worker=proc)
    assert c_doc["enqueued"]["parent_id"] == parent._id
    assert c_doc["started_at"] >= p_doc["finished_at"]


def test_failing_job_does_not_trigger_its_chain(db, worker):
    proc = worker()
    failing = enqueue("FailChained")
    wait_state(db, failing._id, "error", worker=proc)
    # events are written after the whole finish step (chain included)
    wait_for(lambda: [e for e in events_for(db, failing._id)
                      if e["name"] == "error_job"],
             message="the error_job event")
    assert jobs_named(db, J + "D") == []


def test_execute_does_not_chain(db, core4_env):
    from core4.queue.helper.functool import execute
    doc = execute(J + "Chained")
    assert doc["state"] == "complete", doc
    assert db.sys_queue.count_documents({}) == 0
    assert db.sys_journal.count_documents({}) == 0
    assert jobs_named(db, J + "C") == []


# enqueue-time validation ---------------------------------------------------

@pytest.mark.parametrize("attribute, value", [
    ("dependency", J + "Nope"),
    ("chain", J + "Nope"),
    ("dependency", "tests.djobs.nomodule.Job"),
    ("chain", "tests.djobs.nomodule.Job"),
])
def test_unknown_name_is_refused(db, attribute, value):
    with pytest.raises(CoreJobInvalid) as info:
        enqueue("C", **{attribute: [value]})
    assert value in str(info.value)
    assert attribute in str(info.value)
    assert db.sys_queue.count_documents({}) == 0


def test_unknown_job_id_is_refused(db):
    oid = ObjectId()
    with pytest.raises(CoreJobInvalid) as info:
        enqueue("C", dependency=[str(oid)])
    assert str(oid) in str(info.value)
    assert db.sys_queue.count_documents({}) == 0


@pytest.mark.parametrize("first, second", [("CycX", "CycY"),
                                           ("CycP", "CycQ")])
def test_cycle_is_refused(db, first, second):
    with pytest.raises(CoreJobInvalid) as info:
        enqueue(first)
    message = str(info.value)
    assert "cycle" in message, message
    assert J + first in message and J + second in message, message
    assert db.sys_queue.count_documents({}) == 0


@pytest.mark.parametrize("args, words", [
    ((J + "CycX",), ("cycle", J + "CycX", J + "CycY")),
    ((J + "CycP",), ("cycle", J + "CycP", J + "CycQ")),
    ((J + "C", 'dependency=["%sNope"]' % J), (J + "Nope",)),
])
def test_coco_enqueue_refuses_bad_references(db, args, words):
    proc = coco("--enqueue", *args)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, (proc.returncode, output)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert db.sys_queue.count_documents({}) == 0


# events --------------------------------------------------------------------

def test_events_of_a_job_run_by_a_worker(db, worker):
    proc = worker()
    job = enqueue("C", key="events")
    wait_state(db, job._id, "complete", worker=proc)
    found = wait_for(
        lambda: (lambda evs: evs if "complete_job" in [
            e["name"] for e in evs] else None)(events_for(db, job._id)),
        message="the complete_job event")
    names = [e["name"] for e in found]
    assert names == ["enqueue_job", "start_job", "complete_job"], found
    states = [e["data"]["state"] for e in found]
    assert states == ["pending", "running", "complete"], found
    for event in found:
        assert event["data"]["_id"] == job._id
        assert event["data"]["name"] == J + "C"
        assert event["channel"] == "queue"
        assert event["created"] is not None
    index = find_index(db.sys_event, [("created", 1)])
    assert index is not None, db.sys_event.index_information()
    info = db.sys_event.index_information()[index]
    assert info.get("expireAfterSeconds") == int(get_config().event.ttl), info
