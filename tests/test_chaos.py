"""Chaos tests of the worker: real worker processes on a real server, killed
at the worst moment.

1. ``kill -9`` of a worker mid-job: its job process dies with it, another
   worker recovers the job once the lease expired, and runs it to the end
   at once, without using up an attempt (the job was lost, it did not
   fail).
2. Exactly once under load: 4 workers, 2,000 jobs, each runs once.
3. ``kill -9`` of the database server mid-run: the workers ride out the
   outage, no job is lost or run twice.
4. A stalled database server (SIGSTOP): no client sees an error, and live
   workers must not recover each other's (or their own) running jobs.

Tests 3 and 4 keep the outage shorter than the jobs' watchdog deadline
(``lease - margin`` after the last renewal; their workers run with a longer
heartbeat, OUTAGE_HEARTBEAT): such an outage must cost no job. A longer one
stops the jobs by design (see tests/test_fencing.py).

The jobs (``tests.cjobs.x``) record every execution in the collection
``chaos_runs`` of the test's database; their ``at`` is UTC epoch seconds
(``time.time()``). Times of core4's documents are datetimes (UTC).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pymongo
import pytest
from bson import ObjectId

from core4.config import reset_config
from core4.mongo import embedded, now
from core4.queue.queue import CoreQueue
from tests.support import WorkerProcess, wait_for, worker_env

SLOW = "tests.cjobs.x.SlowJob"
RECORD = "tests.cjobs.x.RecordJob"
RUNS = "chaos_runs"


# helpers ---------------------------------------------------------------------

def alive(pid):
    """True if ``pid`` runs (a zombie has ended: it holds nothing)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def logs(workers):
    """The output of ``workers``, for assertion messages."""
    return "\n".join("----- worker %s -----\n%s" % (w.name, w.output()[-6000:])
                     for w in workers)


def journal_states(db, name):
    """``{state: count}`` of the journaled jobs named ``name``."""
    counts = {}
    for doc in db.sys_journal.find({"name": name}, {"state": 1}):
        counts[doc["state"]] = counts.get(doc["state"], 0) + 1
    return counts


def complete_count(db, name):
    return db.sys_journal.count_documents({"name": name,
                                           "state": "complete"})


def duplicates(db):
    """All job ids in ``chaos_runs``, and those recorded more than once."""
    seen, dup = set(), set()
    for doc in db[RUNS].find({}, {"job": 1}):
        (dup if doc["job"] in seen else seen).add(doc["job"])
    return seen, dup


def describe_runs(db, job_id):
    """A job's executions and its journal entry, for assertion messages."""
    doc = db.sys_journal.find_one({"_id": ObjectId(job_id)}) or {}
    runs = [(r["worker"], r["token"], r["trial"], r["pid"], r["at"])
            for r in db[RUNS].find({"job": job_id}).sort("at", 1)]
    return "job %s: %s trial %s lost %s by %s, last_error %r; runs %r" % (
        job_id, doc.get("state"), doc.get("trial"), doc.get("lost"),
        doc.get("lost_by"), (doc.get("last_error") or {}).get("exception"),
        runs)


@pytest.fixture
def workers(tmp_path):
    """``start(name, **env)`` starts a worker; all are stopped at the end,
    and so is any job process they left behind (``orphans``)."""
    started = []
    orphans = []

    def start(name, **options):
        proc = WorkerProcess(name, env=worker_env(**options),
                             log_dir=str(tmp_path))
        started.append(proc)
        return proc

    start.orphans = orphans
    yield start
    for proc in started:
        proc.stop()
    for pid in orphans:
        try:
            job = psutil.Process(pid)
            if "core4.queue.launcher" in " ".join(job.cmdline()):
                job.kill()
        except psutil.Error:
            pass


# 1. kill -9 of a worker mid-job ---------------------------------------------

def test_kill9_worker_mid_job_is_recovered_elsewhere(core4_env, workers):
    db = core4_env.db()
    first_w, second_w = workers("chaosa"), workers("chaosb")
    first_w.wait_registered(db)
    second_w.wait_registered(db)
    # one attempt, and a failure would wait 600 s: a loss must cost no
    # attempt and run the job again at once
    job = CoreQueue().enqueue(SLOW, attempts=1, error_time=600, sleep=3.0)
    jid = str(job._id)

    start = wait_for(lambda: db[RUNS].find_one({"job": jid, "kind": "start"}),
                     20, message="the first start of the job")
    # whoever claimed it is A; the other one (already running) is B
    a, b = ((first_w, second_w) if start["worker"].startswith("chaosa@")
            else (second_w, first_w))
    ident_a = start["worker"]
    workers.orphans.append(start["pid"])
    assert alive(start["pid"])
    running = db.sys_queue.find_one({"_id": job._id})
    assert running["state"] == "running"
    assert running["locked"]["worker"] == ident_a

    a.kill9()
    killed_at = time.time()
    killed = now()

    # the launcher kills A's job process: it must not run on unsupervised,
    # and it must be gone before any other execution starts
    def job_of_a_ended():
        starts = db[RUNS].count_documents({"job": jid, "kind": "start"})
        assert starts == 1, "a second execution started while the job " \
            "process of the dead worker still ran (pid %d)" % start["pid"]
        return not alive(start["pid"])
    wait_for(job_of_a_ended, 5, 0.02,
             "the job process %d of the killed worker to end" % start["pid"])
    ended_at = time.time()

    # B recovers the job once A's lease ran out (lease 2 x heartbeat = 4 s,
    # plus the margin of 1 s; the bound leaves room for a loaded
    # machine) ...
    recovered = wait_for(lambda: db.sys_queue.find_one(
        {"_id": job._id, "last_error": {"$exists": True}}) or
        db.sys_journal.find_one({"_id": job._id}), 20, 0.02,
        "the recovery of the job")
    error = recovered["last_error"]["exception"]
    assert "worker %s lost" % ident_a in error, error
    detect = (recovered["last_error"]["timestamp"] - killed).total_seconds()
    assert detect < 12.0, "recovered %.1f s after the kill" % detect

    # ... and runs it to the end
    done = wait_for(lambda: db.sys_journal.find_one({"_id": job._id}), 30,
                    message="the job in the journal\n" + logs([a, b]))
    assert done["state"] == "complete", (done, logs([b]))
    assert done["trial"] == 2
    assert done["attempts_left"] == 0, "the loss used up the only attempt"
    assert done["lost"] == 1
    assert done["lost_by"] == [ident_a]
    assert ident_a in done["last_error"]["exception"]
    # run again at once, not after error_time
    again = (done["started_at"] - killed).total_seconds()
    assert again < 20.0, "ran again %.1f s after the kill" % again
    assert db.sys_queue.find_one({"_id": job._id}) is None

    runs = list(db[RUNS].find({"job": jid}).sort("at", 1))
    starts = [r for r in runs if r["kind"] == "start"]
    ends = [r for r in runs if r["kind"] == "end"]
    assert len(starts) == 2, runs
    assert starts[0]["worker"] == ident_a
    assert starts[1]["worker"].startswith(b.name + "@"), runs
    assert starts[1]["trial"] == 2
    assert starts[1]["token"] != starts[0]["token"]
    # one execution ran to its end: B's; A's never ended, and it was
    # dead before B's began
    assert [e["start"] for e in ends] == [starts[1]["_id"]], runs
    assert starts[1]["at"] >= ended_at - 0.5, (starts, ended_at)
    assert b.proc.poll() is None, logs([b])
    assert "recovered job [%s]" % jid in b.output()
    print("\nkill -9 worker: recovered %.2f s after the kill, job process "
          "gone %.2f s after it" % (detect, ended_at - killed_at))


# 2. exactly once under load -------------------------------------------------

WORKERS = 4
PER_WORKER = 500


def test_exactly_once_under_load(core4_env, workers, capsys):
    db = core4_env.db()
    total = WORKERS * PER_WORKER
    db[RUNS].create_index([("job", 1), ("kind", 1)])
    procs = [workers("load%d" % i) for i in range(WORKERS)]
    for proc in procs:
        proc.wait_registered(db)

    queue = CoreQueue()
    began = time.monotonic()
    ids = {str(queue.enqueue(RECORD, n=n)._id) for n in range(total)}
    enqueued = time.monotonic() - began
    assert len(ids) == total

    last = [0, time.monotonic()]

    def all_complete():
        count = complete_count(db, RECORD)
        if count != last[0]:
            last[:] = [count, time.monotonic()]
        elif time.monotonic() - last[1] > 60:
            raise AssertionError("no progress for 60 s at %d/%d complete: "
                                 "%r\n%s" % (count, total, journal_states(
                                     db, RECORD), logs(procs)))
        return count >= total
    wait_for(all_complete, 300, 1.0, "%d jobs to complete" % total)
    elapsed = time.monotonic() - began

    assert journal_states(db, RECORD) == {"complete": total}
    assert db.sys_queue.count_documents({"name": RECORD}) == 0
    seen, dup = duplicates(db)
    assert not dup, "%d job(s) ran more than once, e.g.:\n%s\n%s" % (
        len(dup), "\n".join(describe_runs(db, _id)
                            for _id in sorted(dup)[:5]), logs(procs))
    assert seen == ids
    assert db[RUNS].count_documents({}) == total
    assert db.sys_journal.count_documents({"name": RECORD, "trial": 1}) \
        == total
    for proc in procs:
        assert proc.proc.poll() is None, logs([proc])
    per_worker = {}
    for doc in db[RUNS].find({}, {"worker": 1}):
        per_worker[doc["worker"]] = per_worker.get(doc["worker"], 0) + 1
    times = [doc["at"] for doc in db[RUNS].find({}, {"at": 1})]
    window = max(times) - min(times)
    with capsys.disabled():
        print("\nexactly once: %d jobs, %d workers: enqueued in %.1f s "
              "(workers running), all complete %.1f s after the first "
              "enqueue = %.1f jobs/s; first to last execution %.1f s; per "
              "worker %s" % (total, WORKERS, enqueued, elapsed,
                             total / elapsed, window,
                             sorted(per_worker.values())))
    assert elapsed < 180, "%d jobs took %.0f s" % (total, elapsed)


# 3. kill -9 of the database server mid-run ----------------------------------

class OwnServer:
    """An NX-27017 server of this test only, that can be killed and
    restarted on the same port with the same data."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.url = embedded.ensure_server(data_dir)
        with open(os.path.join(data_dir, "server.json")) as handle:
            self.state = json.load(handle)
        self.port = self.state["port"]
        self.proc = None            # after a restart: our Popen
        self.client = pymongo.MongoClient(self.url,
                                          serverSelectionTimeoutMS=20000)

    def pid(self):
        return self.proc.pid if self.proc else self.state["pid"]

    def kill9(self):
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        else:
            try:  # ensure_server started it as our (detached) child
                os.waitpid(pid, 0)
            except ChildProcessError:
                wait_for(lambda: not alive(pid), 10,
                         message="the server %d to die" % pid)
        assert not embedded.ping(self.port, 0.2)

    def restart(self):
        d = self.data_dir
        try:
            os.remove(os.path.join(d, "nx.pid"))
        except FileNotFoundError:
            pass
        with open(os.path.join(d, "nx.out"), "ab") as out:
            # the same code as core4 starts: it applies core4.mongo.nxpatch
            # (without it a $set of a datetime stores a string)
            self.proc = subprocess.Popen(
                [sys.executable, "-c", embedded._NX_CODE, "--data-dir", d,
                 "--host", "127.0.0.1", "-p", str(self.port), "--pid-file",
                 os.path.join(d, "nx.pid"), "--log-file",
                 os.path.join(d, "nx.log")],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=d, start_new_session=True)

        def up():
            assert self.proc.poll() is None, "the server did not restart " \
                "on port %d: %s" % (self.port, embedded._tail(d, 5))
            return embedded.ping(self.port, 0.5)
        wait_for(up, 30, 0.05, "the restarted server to answer")
        # keep server.json true, so stop_server() finds this process
        self.state = dict(self.state, pid=self.proc.pid,
                          started_at=time.time())
        tmp = os.path.join(d, "server.json.tmp")
        with open(tmp, "w") as handle:
            json.dump(self.state, handle)
        os.replace(tmp, os.path.join(d, "server.json"))

    def pause(self):
        """Stall the server (SIGSTOP): connections stay open, nothing
        answers, no client sees an error."""
        os.kill(self.pid(), signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.pid(), signal.SIGCONT)
        self.paused = False

    def stop(self):
        if getattr(self, "paused", False):
            self.resume()
        self.client.close()
        embedded.stop_server(self.data_dir)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_server(core4_env, monkeypatch, tmp_path):
    """A fresh NX-27017 server; core4 (here and in workers) points at it."""
    server = OwnServer(os.path.realpath(str(tmp_path / "nx")))
    try:
        monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url", server.url)
        reset_config()
        server.db = server.client[core4_env.database]
        yield server
    finally:
        server.stop()
        reset_config()


JOBS = 100
#: heartbeat of the workers of tests 3 and 4: lease 12 s, margin 3 s, so a
#: job's watchdog stops it 9 s after the last renewal, and leases are
#: renewed every 3 s while jobs run: an outage of OUTAGE s leaves a
#: renewal at most ~6 s old, seconds inside the deadline
OUTAGE_HEARTBEAT = {"CORE4_OPTION_daemon__heartbeat": "!!float 6"}
OUTAGE = 3.0


def test_kill9_database_server_mid_run(own_server, workers):
    db = own_server.db
    db[RUNS].create_index([("job", 1), ("kind", 1)])
    # few slots, so the 100 jobs take a few seconds and the kill lands
    # in the middle of the run
    procs = [workers("dbk%d" % i, CORE4_OPTION_worker__max_jobs="3",
                     **OUTAGE_HEARTBEAT)
             for i in range(2)]
    for proc in procs:
        proc.wait_registered(db)
    queue = CoreQueue()
    ids = {str(queue.enqueue(RECORD, n=n, sleep=0.05 + 0.05 * (n % 4),
                             attempts=3, error_time=1)._id)
           for n in range(JOBS)}

    wait_for(lambda: complete_count(db, RECORD) >= 10, 60,
             message="some jobs to complete\n" + logs(procs))
    before = complete_count(db, RECORD)
    own_server.kill9()
    down_at = time.monotonic()
    # the outage itself is the scenario: OUTAGE s without a server
    time.sleep(OUTAGE)
    own_server.restart()
    print("\nserver down %.1f s, %d/%d jobs complete before" % (
        time.monotonic() - down_at, before, JOBS))
    assert before < JOBS, "all jobs were done before the server was killed"

    try:
        wait_for(lambda: complete_count(db, RECORD) >= JOBS or
                 sum(journal_states(db, RECORD).values()) >= JOBS, 120, 0.5,
                 "all jobs to end")
    finally:
        print(logs(procs))
    states_ = journal_states(db, RECORD)
    seen, dup = duplicates(db)
    failures = [(d["_id"], d["state"], d["trial"],
                 (d.get("last_error") or {}).get("exception"))
                for d in db.sys_journal.find({"name": RECORD,
                                              "state": {"$ne": "complete"}})]
    retried = [(d["_id"], d["trial"], d["last_error"]["exception"])
               for d in db.sys_journal.find({"name": RECORD,
                                             "trial": {"$gt": 1}})]
    assert states_ == {"complete": JOBS}, (states_, failures, retried)
    assert not dup, "ran more than once: %s; retried: %s" % (sorted(dup),
                                                              retried)
    assert seen == ids, "lost: %s" % sorted(ids - seen)
    assert db.sys_queue.count_documents({"name": RECORD}) == 0
    for proc in procs:
        assert proc.proc.poll() is None, logs([proc])
    assert not retried, retried



# 4. a stalled database server -----------------------------------------------

STALLS = 6
STALL_WORKERS = 5
STALL_JOBS = 4
#: seconds of each stall: longer than the leases of the other tests
#: (tests/support.py FAST: 4 s), inside the watchdog deadline (see
#: OUTAGE_HEARTBEAT)
STALL = OUTAGE
#: seconds between renewals of an idle worker (the slowest to renew)
HEARTBEAT = float(OUTAGE_HEARTBEAT["CORE4_OPTION_daemon__heartbeat"]
                  .split()[-1])


def recovered_jobs(db, name):
    """Jobs of ``name`` that have a ``last_error`` (here: were recovered)."""
    return [d for coll in (db.sys_queue, db.sys_journal) for d in coll.find(
        {"name": name, "last_error": {"$exists": True}})]


def test_database_stall_does_not_recover_live_jobs(own_server, workers):
    """A server that stalls (SIGSTOP: like a long disk or GC pause, or a
    network partition) is an outage in which no client sees an error:
    every operation just waits. Live workers must not take that for
    anyone's death: jobs running across the stalls keep their leases and
    end complete on their first trial, each started once.

    Whether a worker wrongly recovers a job depends on where in its loop a
    stall catches each worker, so several workers run several long jobs and
    the server stalls up to STALLS times for STALL seconds."""
    db = own_server.db
    procs = [workers("stall%d" % i, **OUTAGE_HEARTBEAT)
             for i in range(STALL_WORKERS)]
    for proc in procs:
        proc.wait_registered(db)
    queue = CoreQueue()
    # the jobs run across all stalls (each takes STALL s, a random phase
    # and the renewals after it)
    span = STALLS * (STALL + HEARTBEAT + 1.0)
    jobs = [queue.enqueue(SLOW, attempts=2, error_time=1, sleep=span, n=n)
            for n in range(STALL_JOBS)]
    for job in jobs:
        start = wait_for(lambda: db[RUNS].find_one({"job": str(job._id)}),
                         20, message="job %s to start" % job._id)
        workers.orphans.append(start["pid"])

    stalls = 0
    while stalls < STALLS and not recovered_jobs(db, SLOW):
        stalls += 1
        # a random phase against the workers' loops, then the stall itself
        # (the scenario): STALL s without an answer
        time.sleep(random.uniform(0.0, 0.5))
        own_server.pause()
        time.sleep(STALL)
        own_server.resume()
        resumed_at = now()
        wait_for(lambda: db.sys_worker.count_documents({
            "kind": "worker", "heartbeat": {"$gt": resumed_at}})
            == STALL_WORKERS, HEARTBEAT + 10, message="all workers to "
            "renew")

    def report(problems):
        return "after stall %d of %d:\n%s\n%s" % (
            stalls, STALLS, "\n".join(problems), logs(procs))

    def describe(doc):
        runs = db[RUNS].find({"job": str(doc["_id"])}).sort("at", 1)
        return "job %s: %s on trial %s, last_error %r, executions %r" % (
            doc["_id"], doc["state"], doc["trial"],
            (doc.get("last_error") or {}).get("exception"),
            [(r["kind"], r["worker"], r["pid"]) for r in runs])

    recovered = recovered_jobs(db, SLOW)
    if recovered:
        pytest.fail(report([describe(d) for d in recovered]))
    wait_for(lambda: db.sys_journal.count_documents({"name": SLOW})
             == STALL_JOBS, span + 30, 0.2, "the jobs to end")
    problems = [describe(d) for d in db.sys_journal.find({"name": SLOW})
                if (d["state"], d["trial"]) != ("complete", 1)
                or "last_error" in d
                or db[RUNS].count_documents({"job": str(d["_id"])}) != 2]
    if problems:
        pytest.fail(report(problems))
    for proc in procs:
        assert proc.proc.poll() is None, logs([proc])
