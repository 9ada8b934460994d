"""Removing a running job does not interrupt its run (issue 19, item 4):
``removed_at`` is set, the run goes on to its end, and the job then moves
to the journal in the state the run ended in, never to run again. ``kill``
still stops a run. Real ``coco --worker`` and ``coco --remove`` processes."""

import subprocess
import sys

from core4.queue.queue import CoreQueue
from tests.support import let_worker_cycle, wait_for, worker_env

JOBS = "tests.rjobs.jobs."


def coco(*args):
    """Run ``coco`` with the test's configuration."""
    return subprocess.run(
        [sys.executable, "-m", "core4.script.coco", *args],
        capture_output=True, text=True, timeout=60, env=worker_env(),
        stdin=subprocess.DEVNULL)


def started(db, key):
    """Wait until the gate job ``key`` runs; return its report."""
    return wait_for(lambda: db.r_report.find_one(
        {"_id": key, "start": {"$exists": True}}), 30,
        message="gate job %s to start" % key)


def journaled(db, _id, timeout=30):
    """Wait until job ``_id`` is in the journal (and out of the queue)."""
    return wait_for(lambda: db.sys_queue.find_one({"_id": _id}) is None
                    and db.sys_journal.find_one({"_id": _id}), timeout,
                    message="job %s in the journal" % _id)


def release(db, key):
    """Let the gate job ``key`` end."""
    db.r_release.insert_one({"_id": key})


def test_removed_run_completes_and_is_journaled(db, start_worker):  # noqa
    worker = start_worker()
    _id = CoreQueue().enqueue(JOBS + "GateJob", key="rm")._id
    started(db, "rm")
    done = coco("--remove", str(_id))
    assert done.returncode == 0, done.stderr
    assert "removing [%s]" % _id in done.stdout
    assert "takes effect when the run ends" in done.stdout
    # the run goes on: the worker passes its kill and removal checks
    let_worker_cycle(db, worker, beats=2)
    doc = db.sys_queue.find_one({"_id": _id})
    assert doc["state"] == "running" and doc.get("removed_at")
    assert "killed_at" not in doc
    assert "end" not in db.r_report.find_one({"_id": "rm"})
    release(db, "rm")
    doc = journaled(db, _id)
    assert doc["state"] == "complete", doc.get("last_error")
    assert doc.get("removed_at") and doc["trial"] == 1
    assert db.r_report.find_one({"_id": "rm"}).get("end")
    # a job that does not run is removed at once, as before
    CoreQueue().pause()
    let_worker_cycle(db, worker, beats=1)  # it knows of the pause
    waiting = CoreQueue().enqueue(JOBS + "GateJob", key="rm-wait")._id
    done = coco("--remove", str(waiting))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "removed [%s]\n" % waiting
    # (it never ran: its state says it was removed)
    assert journaled(db, waiting, timeout=1)["state"] == "removed"


def test_removed_run_that_fails_is_never_retried(db, start_worker):  # noqa
    worker = start_worker()
    queue = CoreQueue()
    _id = queue.enqueue(JOBS + "GateJob", key="rm-fail", fail=True,
                        attempts=3, error_time=1)._id
    started(db, "rm-fail")
    assert queue.remove(_id) is True
    let_worker_cycle(db, worker, beats=2)
    assert db.sys_queue.find_one({"_id": _id})["state"] == "running"
    release(db, "rm-fail")
    doc = journaled(db, _id)
    # a run that failed with attempts left would run again: the journal
    # says removed (the failure stays in last_error)
    assert doc["state"] == "removed" and doc["attempts_left"] == 2
    assert "gate rm-fail fails" in doc["last_error"]["exception"]
    # error_time (1 s) passes: no second run
    let_worker_cycle(db, worker, beats=3)
    assert db.r_report.find_one({"_id": "rm-fail"})["trial"] == 1
    assert db.sys_queue.find_one({"_id": _id}) is None


def test_kill_still_stops_a_removed_run(db, start_worker):  # noqa: F811
    worker = start_worker()
    queue = CoreQueue()
    _id = queue.enqueue(JOBS + "GateJob", key="rm-kill")._id
    started(db, "rm-kill")
    assert queue.remove(_id) is True
    assert queue.kill(_id) is True
    doc = journaled(db, _id)
    assert doc["state"] == "killed", (doc, worker.output()[-2000:])
    assert "end" not in db.r_report.find_one({"_id": "rm-kill"})
