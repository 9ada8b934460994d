"""Never twice at once (issue 18): a job stops before its lease can pass to
another worker, whatever happens to its worker.

Each test runs a job longer than a lease (tests.fjobs.fence.FenceJob: it
holds an exclusive flock on a witness file while it runs and logs its
starts and ends) on worker A, does something bad to A, and checks with the
OS-level witness that the job ran again on worker B only after the first
execution had ended, and that it ends ``complete`` without using up its
single attempt. Test settings (tests/support.FAST): heartbeat 2 s, so the
lease lasts 4 s and the margin is 1 s.
"""

import os
import signal

import psutil
import pytest

from core4.queue.queue import CoreQueue
from tests.support import WorkerProcess, find_job, wait_for, worker_env
from tests.test_chaos import own_server  # noqa: F401 (a fixture)

FENCE = "tests.fjobs.fence.FenceJob"


@pytest.fixture
def pair(core4_env, tmp_path):
    """Workers A and B (A started first); the job is enqueued once A runs
    and before B starts, so A claims it."""
    started = []

    def start(name):
        worker = WorkerProcess(name, env=worker_env(), log_dir=str(tmp_path))
        started.append(worker)
        worker.wait_registered(core4_env.db(), 60)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            try:
                os.kill(worker.pid, signal.SIGCONT)
            except OSError:
                pass
        worker.stop()


def events(witness):
    """The witness log: [(kind, pid, time)]."""
    try:
        with open(witness + ".log") as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        return []
    return [(kind, int(pid), float(at)) for kind, pid, at in
            (line.split() for line in lines if line)]


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run_on_a(db, start, tmp_path, seconds=12):
    """Start A, enqueue the fence job, wait until it runs on A; start B.
    Returns (A, B, job id, witness path, pid of the first execution)."""
    a = start("fencea")
    witness = str(tmp_path / "witness")
    job = CoreQueue().enqueue(FENCE, witness=witness, seconds=seconds,
                              attempts=1)
    first = wait_for(lambda: [e for e in events(witness)
                              if e[0] == "start"], 60,
                     message="the first start")[0]
    b = start("fenceb")
    return a, b, job._id, witness, first[1]


def assert_once_at_a_time(db, job_id, witness, first_pid, b):
    """The job completes on B, after the first execution ended, without
    overlap and without using up its attempt."""
    done = wait_for(lambda: (lambda d: d if d and d["state"] in (
        "complete", "error") else None)(find_job(db, job_id)), 120,
        message="the job to end\n" + b.output()[-3000:])
    seen = events(witness)
    assert not [e for e in seen if e[0] == "overlap"], seen
    starts = [e for e in seen if e[0] == "start"]
    assert len(starts) == 2, seen
    assert starts[0][1] == first_pid and starts[1][1] != first_pid
    assert done["state"] == "complete", done
    assert done["attempts_left"] == 0 and done["trial"] == 2
    assert done["lost"] == 1
    assert done["lost_by"][0].startswith("fencea@")
    return done


def test_worker_session_killed_with_its_launcher(core4_env, pair, tmp_path):
    db = core4_env.db()
    a, b, job_id, witness, first = run_on_a(db, pair, tmp_path)
    # a closed terminal, a supervisor killing the group: worker and
    # launcher die at once; the job process runs in a session of its own
    os.killpg(a.pid, signal.SIGKILL)
    wait_for(lambda: not alive(first), 10,
             message="the orphaned job process %d to stop" % first)
    assert_once_at_a_time(db, job_id, witness, first, b)


def test_stopped_worker_fences_its_job(core4_env, pair, tmp_path):
    db = core4_env.db()
    a, b, job_id, witness, first = run_on_a(db, pair, tmp_path)
    os.kill(a.pid, signal.SIGSTOP)  # Ctrl-Z, a paused VM
    # the job stops itself before its lease (4 s) could pass to B
    wait_for(lambda: not alive(first), 15,
             message="the job of the stopped worker to stop")
    done = assert_once_at_a_time(db, job_id, witness, first, b)
    assert "watchdog" in (done.get("last_error") or {}).get(
        "exception", "") or "lost" in done["last_error"]["exception"]
    os.kill(a.pid, signal.SIGCONT)
    # A carries on, finds its job gone and writes nothing over B's outcome
    wait_for(lambda: "lost its lease" in a.output() or
             "stopped by its watchdog" in a.output() or
             a.proc.poll() is None, 30, message="A to continue")
    assert find_job(db, job_id)["state"] == "complete"


def test_launcher_killed_alone(core4_env, pair, tmp_path):
    db = core4_env.db()
    a, b, job_id, witness, first = run_on_a(db, pair, tmp_path, seconds=8)
    launcher = psutil.Process(first).ppid()
    assert "core4.queue.launcher" in " ".join(
        psutil.Process(launcher).cmdline())
    os.kill(launcher, signal.SIGKILL)
    wait_for(lambda: not alive(first), 10,
             message="the job of the killed launcher to stop")
    # A records the job as lost: it runs again at once (on A or B)
    done = wait_for(lambda: (lambda d: d if d and d["state"] in (
        "complete", "error") else None)(find_job(db, job_id)), 120,
        message="the job to end\n" + a.output()[-3000:])
    seen = events(witness)
    assert not [e for e in seen if e[0] == "overlap"], seen
    assert done["state"] == "complete" and done["lost"] == 1, done
    assert done["attempts_left"] == 0


def test_worker_cut_off_from_the_database(own_server, tmp_path):
    """The database stalls (SIGSTOP: a network partition, a paused VM)
    for longer than a lease: no worker can renew or recover anything, so
    the job stops itself before its lease ends; afterwards it runs again,
    once at a time, and completes without using up its attempt."""
    db = own_server.db
    started = []
    try:
        a = WorkerProcess("cuta", env=worker_env(), log_dir=str(tmp_path))
        started.append(a)
        a.wait_registered(db, 60)
        witness = str(tmp_path / "witness")
        job = CoreQueue().enqueue(FENCE, witness=witness, seconds=10,
                                  attempts=1)
        first = wait_for(lambda: [e for e in events(witness)
                                  if e[0] == "start"], 60,
                         message="the first start")[0][1]
        b = WorkerProcess("cutb", env=worker_env(), log_dir=str(tmp_path))
        started.append(b)
        b.wait_registered(db, 60)
        own_server.pause()
        try:
            # lease 4 s, margin 1 s: the watchdog stops the job after 3 s
            wait_for(lambda: not alive(first), 15,
                     message="the job to stop itself while the database "
                     "is away")
        finally:
            own_server.resume()
        done = wait_for(lambda: (lambda d: d if d and d["state"] in (
            "complete", "error") else None)(find_job(db, job._id)), 120,
            message="the job to end\n" + a.output()[-3000:])
        seen = events(witness)
        assert not [e for e in seen if e[0] == "overlap"], seen
        starts = [e for e in seen if e[0] == "start"]
        assert len(starts) == 2 and starts[0][1] == first, seen
        assert done["state"] == "complete", done
        assert done["attempts_left"] == 0 and done["lost"] == 1
        assert "watchdog" in a.output() or "lost" in a.output()
    finally:
        for worker in started:
            worker.stop()
