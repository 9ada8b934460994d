"""Tests of the worker: real ``coco --worker NAME`` processes (see
tests/support.py) run the jobs of tests/wjobs against the session's
NX-27017 server (fixture ``core4_env``)."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from core4.base import hostname
from core4.mongo import now
from core4.queue.queue import CoreQueue
from tests.support import (find_job, let_worker_cycle, wait_for, wait_state,
                           worker_env)

JOBS = "tests.wjobs.jobs."
DUMMY = "core4.queue.helper.job.DummyJob"


# helpers -------------------------------------------------------------------

def enqueue(name, **kwargs):
    """Enqueue a job of tests/wjobs (or a qualified name); return its id."""
    if "." not in name:
        name = JOBS + name
    return CoreQueue().enqueue(name, **kwargs)._id


def secs(delta):
    """Seconds of a timedelta."""
    return delta.total_seconds()


def ident(name):
    return "%s@%s" % (name, hostname())






def wait_journal(db, _id, timeout=15, worker=None):
    """Wait until job ``_id`` is complete in sys_journal; return its doc."""
    def done():
        doc = db.sys_journal.find_one({"_id": _id})
        return doc if doc and doc["state"] == "complete" else None
    try:
        return wait_for(done, timeout, message="job %s complete in the "
                        "journal" % _id)
    except AssertionError as exc:
        doc = find_job(db, _id) or {}
        log = worker.output()[-3000:] if worker else ""
        raise AssertionError("%s; now %s, last_error %s\n%s" % (
            exc, doc.get("state"), doc.get("last_error"), log)) from None


def wait_report(db, key, field, timeout=15):
    """Wait until the job reported ``field`` under ``key``; return the doc."""
    return wait_for(lambda: (db.w_report.find_one(
        {"_id": key, field: {"$exists": True}})), timeout,
        message="report %s.%s" % (key, field))


def gone(pid):
    """True if process ``pid`` does not run any more (zombies count)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def coco(*args):
    return subprocess.run(
        [sys.executable, "-m", "core4.script.coco", *args],
        capture_output=True, text=True, timeout=30, env=worker_env(),
        stdin=subprocess.DEVNULL)


def reap(*pids):
    """Kill leftover processes of a failed test."""
    for pid in pids:
        if pid and not gone(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# the daemon ------------------------------------------------------------------

def test_register_alive_duplicate_halt(db, start_worker):
    worker = start_worker("reg")
    doc = db.sys_worker.find_one({"_id": ident("reg")})
    assert doc["kind"] == "worker"
    assert doc["pid"] == worker.pid
    assert doc["hostname"] == hostname()
    assert doc["phase"] == "loop"
    first = doc["heartbeat"]
    wait_for(lambda: db.sys_worker.find_one(
        {"_id": ident("reg")})["heartbeat"] > first, 5,
        message="the heartbeat to advance")

    alive = coco("--alive")
    assert alive.returncode == 0, alive.stderr
    assert ident("reg") in alive.stdout

    second = start_worker("reg", wait=False)
    code = second.wait(20)
    lines = [line for line in second.output().splitlines() if line.strip()]
    assert code != 0
    assert len(lines) == 1 and "already running" in lines[0], lines
    assert "Traceback" not in second.output()
    doc = db.sys_worker.find_one({"_id": ident("reg")})
    assert doc["pid"] == worker.pid and doc["phase"] == "loop"
    assert worker.proc.poll() is None

    halt = coco("--halt")
    assert halt.returncode == 0, halt.stderr
    assert worker.wait(15) == 0, worker.output()[-2000:]
    assert db.sys_worker.find_one({"_id": ident("reg")})["phase"] == "exit"


def test_halt_before_start_does_not_stop(db, start_worker):
    CoreQueue().halt()
    worker = start_worker("late")
    let_worker_cycle(db, worker, beats=3)
    assert db.sys_worker.find_one({"_id": ident("late")})["phase"] == "loop"
    CoreQueue().halt()  # a halt after the start does stop it
    assert worker.wait(15) == 0, worker.output()[-2000:]
    assert db.sys_worker.find_one({"_id": ident("late")})["phase"] == "exit"


def test_events_of_the_last_job_are_written_before_exit(db, start_worker):
    """A job that ends during a halt: its events reach sys_event although
    the worker leaves right after it."""
    worker = start_worker("last")
    _id = enqueue("SleepJob", key="last", secs=1.0)
    wait_for(lambda: db.sys_queue.find_one(
        {"_id": _id, "state": "running"}), 15, message="the job to run")
    CoreQueue().halt()
    assert worker.wait(30) == 0, worker.output()[-2000:]
    assert db.sys_journal.find_one({"_id": _id})["state"] == "complete"
    names = {doc["name"] for doc in db.sys_event.find(
        {"data._id": {"$in": [_id]}})}
    assert {"start_job", "complete_job"} <= names, names


# running jobs ----------------------------------------------------------------

def test_job_completes_in_own_process(db, start_worker):
    worker = start_worker()
    _id = enqueue("PidJob", key="own")
    doc = wait_journal(db, _id, worker=worker)
    assert db.sys_queue.find_one({"_id": _id}) is None
    assert doc["state"] == "complete"
    assert doc["prog"]["value"] == 1.0
    assert doc["runtime"] > 0
    assert doc["trial"] == 1
    assert "locked" not in doc
    seen = db.w_report.find_one({"_id": "own"})
    assert seen["pid"] != worker.pid
    assert seen["pgid"] == seen["pid"], "job is not its own process group"
    assert seen["pgid"] != os.getpgid(worker.pid)


def test_spawn_mode_completes(db, start_worker):
    worker = start_worker("spawner", start_method="spawn")
    _id = enqueue("PidJob", key="spawned")
    doc = wait_journal(db, _id, worker=worker)
    assert doc["trial"] == 1 and doc["prog"]["value"] == 1.0
    seen = db.w_report.find_one({"_id": "spawned"})
    assert seen["pid"] != worker.pid
    assert seen["pgid"] == seen["pid"]
    assert "spawn mode" in worker.output()


def test_output_captured(db, start_worker):
    maximum = 2000
    worker = start_worker(
        CORE4_OPTION_worker__stdout_max="!!int %d" % maximum)
    out_id = enqueue("OutputJob")
    bin_id = enqueue("BinaryJob")
    big_id = enqueue("BigOutputJob", size=10000)
    for _id in (out_id, bin_id, big_id):
        wait_journal(db, _id, worker=worker)

    text = db.sys_stdout.find_one({"_id": out_id})["stdout"]
    for part in ("job-out", "job-err", "child-out", "child-err"):
        assert part in text, (part, text)

    data = db.sys_stdout.find_one({"_id": bin_id})["stdout"]
    assert isinstance(data, bytes), repr(data)
    assert b"bin-start \xff\xfe\x80 bin-end\n" in data

    big = db.sys_stdout.find_one({"_id": big_id})["stdout"]
    assert isinstance(big, str)
    mark, sep, kept = big.partition("\n")
    assert sep and mark.startswith("[... ") and mark.endswith(" bytes cut ...]"), \
        mark[:80]
    cut = int(mark.split()[1])
    assert len(kept.encode()) == maximum
    assert cut >= 10000 + len("HEAD-MARK\n") - maximum
    assert "END-MARK" in kept and "HEAD-MARK" not in big


def test_failure_retry_and_error(db, start_worker):
    worker = start_worker()
    retry_id = enqueue("FailJob", key="retry", attempts=2, error_time=1)
    error_id = enqueue("FailJob", key="error", always=True, attempts=1)

    failed = wait_state(db, retry_id, "failed", worker=worker)
    error = failed["last_error"]
    assert "RuntimeError" in error["exception"]
    assert "attempt 1 of retry fails" in error["exception"]
    assert any("RuntimeError" in line for line in error["traceback"])
    assert failed["trial"] == 1 and failed["attempts_left"] == 1
    assert abs(secs(failed["query_at"] - failed["finished_at"]) - 1) < 0.01
    assert abs(secs(failed["query_at"] - now()) - 1) < 1.5
    assert "locked" not in failed

    done = wait_journal(db, retry_id, worker=worker)
    assert done["trial"] == 2
    assert done["started_at"] >= failed["query_at"]
    assert db.w_report.find_one({"_id": "retry"})["runs"] == 2

    doc = wait_state(db, error_id, "error", worker=worker)
    assert doc["trial"] == 1
    assert "attempt 1 of error fails" in doc["last_error"]["exception"]
    assert doc["last_error"]["traceback"]
    assert db.sys_queue.find_one({"_id": error_id}) is not None


def test_defer_then_inactive(db, start_worker):
    worker = start_worker()
    slow_id = enqueue("DeferJob", key="slow", defer_time=100, defer_max=3)
    fast_id = enqueue("DeferJob", key="fast", defer_time=1, defer_max=2)

    first = wait_state(db, fast_id, "deferred", worker=worker)
    assert first["last_error"]["exception"] == "not yet"
    assert abs(secs(first["query_at"] - first["finished_at"]) - 1) < 0.01
    doc = wait_state(db, fast_id, "inactive", timeout=10, worker=worker)
    assert secs(doc["inactive_at"] - doc["first_started_at"]) == \
        pytest.approx(2, abs=0.01)
    assert 2 <= db.w_flags.find_one({"_id": "fast"})["n"] <= 3

    # never picked again (query_at is 100 s away): the flag step does it
    doc = wait_state(db, slow_id, "deferred", "inactive", worker=worker)
    assert doc["state"] == "deferred", "first run took over defer_max"
    assert secs(doc["inactive_at"] - doc["first_started_at"]) == \
        pytest.approx(3, abs=0.01)
    doc = wait_state(db, slow_id, "inactive", timeout=10, worker=worker)
    assert doc["trial"] == 1
    assert db.w_flags.find_one({"_id": "slow"})["n"] == 1
    assert doc["finished_at"] >= doc["inactive_at"]
    assert "became inactive" in worker.output(), (doc, worker.output())


def test_unknown_class_and_bad_args(db, start_worker):
    unknown_id = enqueue("PidJob", key="nope", attempts=3)
    db.sys_queue.update_one({"_id": unknown_id},
                            {"$set": {"name": "tests.wjobs.nope.Nope"}})
    bad_id = enqueue("ArgJob", b=1, attempts=3)
    worker = start_worker()

    doc = wait_state(db, unknown_id, "error", "failed", worker=worker)
    assert doc["state"] == "error", doc["last_error"]
    assert doc["trial"] == 1
    message = doc["last_error"]["exception"]
    assert "tests.wjobs.nope" in message and "not found" in message, message
    assert db.w_report.find_one({"_id": "nope"}) is None

    doc = wait_state(db, bad_id, "error", "failed", worker=worker)
    assert doc["state"] == "error", doc["last_error"]
    assert doc["trial"] == 1
    assert "bad arguments" in doc["last_error"]["exception"]


# killing and removing ----------------------------------------------------------

def test_kill_running_job_and_its_child(db, start_worker):
    worker = start_worker()
    _id = enqueue("ChildSleepJob", key="kill")
    seen = wait_report(db, "kill", "child")
    try:
        assert not gone(seen["pid"]) and not gone(seen["child"])
        assert CoreQueue().kill(_id) is True
        doc = wait_state(db, _id, "killed", worker=worker)
        assert "killed" in doc["last_error"]["exception"]
        assert "locked" not in doc
        wait_for(lambda: gone(seen["pid"]) and gone(seen["child"]), 5,
                 message="job process and its child to end")
    finally:
        reap(seen["pid"], seen["child"])


def test_vanished_job_process_is_killed(db, start_worker):
    worker = start_worker()
    _id = enqueue("SuicideJob")
    doc = wait_state(db, _id, "killed", "error", "failed", worker=worker)
    assert doc["state"] == "killed"
    assert "vanished" in doc["last_error"]["exception"], doc["last_error"]
    assert doc["trial"] == 1
    assert worker.proc.poll() is None


def test_remove_running_and_restart_killed(db, start_worker):
    worker = start_worker()
    queue = CoreQueue()
    removed_id = enqueue("StickyJob", key="removed")
    killed_id = enqueue("StickyJob", key="killed")
    pids = [wait_report(db, key, "pid")["pid"]
            for key in ("removed", "killed")]
    try:
        assert queue.remove(removed_id) is True
        # a removal lets the run go on: kill stops it
        assert queue.kill(removed_id) is True
        assert queue.kill(killed_id) is True
        def journaled():
            doc = db.sys_journal.find_one({"_id": removed_id})
            return doc if doc and doc["state"] == "killed" else None
        doc = wait_for(journaled, 15, message="removed job in the journal")
        assert doc.get("removed_at")
        assert db.sys_queue.find_one({"_id": removed_id}) is None
        wait_state(db, killed_id, "killed", worker=worker)
        wait_for(lambda: all(gone(pid) for pid in pids), 5,
                 message="job processes to end")
    finally:
        reap(*pids)

    new_id = queue.restart(killed_id)
    assert new_id is not None and new_id != killed_id
    old = db.sys_journal.find_one({"_id": killed_id})
    assert old["state"] == "killed"
    assert old["enqueued"]["child_id"] == new_id
    assert db.sys_queue.find_one({"_id": killed_id}) is None
    doc = wait_journal(db, new_id, worker=worker)
    assert doc["enqueued"]["parent_id"] == killed_id
    # as upstream core4: trial counts every start, carried over a restart
    assert doc["trial"] == 2
    assert db.w_flags.find_one({"_id": "killed"})["n"] == 2


def test_restart_failed_runs_now(db, start_worker):
    worker = start_worker()
    _id = enqueue("FailJob", key="again", attempts=2, error_time=1000)
    failed = wait_state(db, _id, "failed", worker=worker)
    assert secs(failed["query_at"] - now()) > 900
    assert CoreQueue().restart(_id) == _id
    doc = wait_journal(db, _id, timeout=10, worker=worker)
    assert doc["trial"] == 2
    assert db.w_flags.find_one({"_id": "again"})["n"] == 2


# flags, caps, maintenance, resources, order ---------------------------------------

def test_wall_and_zombie_flags(db, start_worker):
    worker = start_worker()
    _id = enqueue("SleepJob", key="flags", secs=3, wall_time=1,
                  zombie_time=1)
    doc = wait_journal(db, _id, worker=worker)
    assert secs(doc["wall_at"] - doc["started_at"]) >= 1
    assert secs(doc["zombie_at"] - doc["started_at"]) >= 1
    assert doc["wall_at"] < doc["finished_at"]
    log = worker.output()
    assert log.count("successfully set non-stop job") == 1, log[-3000:]
    assert log.count("successfully set zombie job") == 1, log[-3000:]


def test_max_parallel_across_workers(db, start_worker):
    workers = [start_worker("cap1"), start_worker("cap2")]
    ids = [enqueue("SleepJob", key="cap%d" % i, secs=0.5, max_parallel=1)
           for i in range(4)]
    for _id in ids:
        wait_journal(db, _id, timeout=20, worker=workers[0])
    spans = sorted((doc["start"], doc["end"]) for doc in db.w_report.find(
        {"_id": {"$regex": "^cap"}}))
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans
    runs = sorted((doc["started_at"], doc["finished_at"])
                  for doc in db.sys_journal.find({"_id": {"$in": ids}}))
    for (_, end), (start, _) in zip(runs, runs[1:]):
        assert end <= start, runs


def test_pause_project(db, start_worker):
    queue = CoreQueue()
    queue.pause("tests")
    paused_id = enqueue("PidJob", key="paused")
    dummy_id = enqueue(DUMMY, sleep=0.2)
    worker = start_worker()
    wait_journal(db, dummy_id, worker=worker)
    let_worker_cycle(db, worker, beats=1)
    doc = db.sys_queue.find_one({"_id": paused_id})
    assert doc["state"] == "pending" and doc["trial"] == 0
    queue.resume("tests")
    wait_journal(db, paused_id, worker=worker)


def test_pause_global(db, start_worker):
    queue = CoreQueue()
    queue.pause()
    _id = enqueue("PidJob", key="global")
    worker = start_worker()
    let_worker_cycle(db, worker, beats=3)
    doc = db.sys_queue.find_one({"_id": _id})
    assert doc["state"] == "pending" and doc["trial"] == 0
    queue.resume()
    wait_journal(db, _id, worker=worker)


def test_resource_gate_lets_force_jobs_pass(db, start_worker):
    worker = start_worker(CORE4_OPTION_worker__min_free_ram="!!int 99999999")
    normal_id = enqueue("PidJob", key="normal")
    let_worker_cycle(db, worker, beats=3)
    assert db.sys_queue.find_one({"_id": normal_id})["state"] == "pending"
    forced_id = enqueue("PidJob", key="forced", force=True)
    wait_journal(db, forced_id, worker=worker)
    doc = db.sys_queue.find_one({"_id": normal_id})
    assert doc["state"] == "pending" and doc["trial"] == 0


def test_force_then_priority_then_fifo(db, start_worker):
    queue = CoreQueue()
    queue.pause()
    plan = [("a", 0, False), ("b", 5, False), ("c", 0, False),
            ("d", 10, False), ("e", 5, False), ("f", 0, True)]
    ids = {key: enqueue("PidJob", key="order-" + key, priority=prio,
                        force=force) for key, prio, force in plan}
    worker = start_worker(CORE4_OPTION_worker__max_jobs="!!int 1")
    let_worker_cycle(db, worker, beats=1)
    assert db.sys_queue.count_documents({"state": "pending"}) == 6
    queue.resume()
    docs = [wait_journal(db, _id, worker=worker) for _id in ids.values()]
    by_id = {_id: key for key, _id in ids.items()}
    order = [by_id[doc["_id"]] for doc in sorted(
        docs, key=lambda doc: doc["started_at"])]
    assert order == ["f", "d", "b", "e", "a", "c"]
    runs = sorted((doc["started_at"], doc["finished_at"]) for doc in docs)
    for (_, end), (start, _) in zip(runs, runs[1:]):
        assert end <= start, "max_jobs 1 ran two jobs at once"


# signals -------------------------------------------------------------------

def test_sigterm_lets_the_running_job_finish(db, start_worker):
    worker = start_worker("term")
    _id = enqueue("SleepJob", key="term", secs=2)
    wait_report(db, "term", "start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()[-2000:]
    doc = db.sys_journal.find_one({"_id": _id})
    assert doc is not None and doc["state"] == "complete", doc
    assert db.w_report.find_one({"_id": "term"}).get("end")
    assert db.sys_worker.find_one({"_id": ident("term")})["phase"] == "exit"


def test_second_sigterm_stops_at_once(db, start_worker):
    worker = start_worker("term2")
    _id = enqueue("SleepJob", key="term2", secs=1000)
    pid = wait_report(db, "term2", "start")["pid"]
    try:
        worker.signal(signal.SIGTERM)
        wait_for(lambda: "stopping: signal" in worker.output(), 5,
                 message="the worker to handle the first SIGTERM")
        assert worker.proc.poll() is None
        worker.signal(signal.SIGTERM)
        at = time.monotonic()
        worker.wait(15)
        assert time.monotonic() - at < 5
        doc = find_job(db, _id)
        assert doc["state"] in ("failed", "error", "killed"), doc["state"]
        assert doc["last_error"]["exception"]
        wait_for(lambda: gone(pid), 5, message="the job process to end")
    finally:
        reap(pid)


def test_second_sigterm_kills_a_job_that_ignores_sigterm(db, start_worker):
    """The second SIGTERM means "now": no kill_grace for the jobs."""
    worker = start_worker("term3", CORE4_OPTION_worker__kill_grace="!!int 8")
    _id = enqueue("StubbornJob", key="term3")
    pid = wait_report(db, "term3", "start")["pid"]
    try:
        worker.signal(signal.SIGTERM)
        wait_for(lambda: "stopping: signal" in worker.output(), 5,
                 message="the worker to handle the first SIGTERM")
        worker.signal(signal.SIGTERM)
        at = time.monotonic()
        worker.wait(20)
        took = time.monotonic() - at
        assert took < 4, "worker exited %.1f s after the second SIGTERM" % (
            took)
        assert find_job(db, _id)["state"] != "complete"
        wait_for(lambda: gone(pid), 5, message="the job process to end")
    finally:
        reap(pid)
