"""Helpers for tests that run real worker processes."""

import os
import signal
import subprocess
import sys
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: fast daemon settings for tests (seconds). Leases (twice the heartbeat)
#: stay long enough that a loaded test machine never makes a healthy
#: worker's job look lost.
FAST = {
    "CORE4_OPTION_daemon__heartbeat": "!!float 2",
    "CORE4_OPTION_daemon__alive_timeout": "!!float 10",
    "CORE4_OPTION_worker__kill_grace": "!!float 1",
    "CORE4_OPTION_worker__halt_grace": "!!float 10",
    "CORE4_OPTION_worker__execution_plan__check_requests": "!!float 0.2",
    "CORE4_OPTION_worker__execution_plan__flag_jobs": "!!float 0.3",
    "CORE4_OPTION_worker__execution_plan__recover_jobs": "!!float 0.3",
    "CORE4_OPTION_worker__execution_plan__collect_stats": "!!float 0.5",
    "CORE4_OPTION_worker__execution_plan__publish_output": "!!float 0.2",
    # the test machine is busy by design: only tests of the gate close it
    "CORE4_OPTION_worker__max_cpu": "!!int 100",
}


def wait_for(predicate, timeout=30.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns a true value; return that value.

    Fails the test with ``message`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (
                timeout, message))
        time.sleep(interval)


def let_worker_cycle(db, worker, beats=3, timeout=60):
    """Wait until ``worker`` renewed its heartbeat ``beats`` more times: its
    loop (check_requests and work_jobs included) went round meanwhile."""
    seen = []
    ident = "%s@" % worker.name

    def advanced():
        doc = db.sys_worker.find_one({"_id": {"$regex": "^" + ident}}) or {}
        if not seen or doc.get("heartbeat") != seen[-1]:
            seen.append(doc.get("heartbeat"))
        return len(seen) > beats
    wait_for(advanced, timeout, message="%d heartbeats of %s" % (
        beats, worker.name))
    assert worker.proc.poll() is None, worker.output()[-2000:]


def worker_env(**options):
    """Environment for a worker subprocess: the test's CORE4_OPTION_*
    variables (from os.environ), fast daemon settings, ``tests`` importable,
    plus ``options`` as extra variables."""
    env = dict(os.environ)
    env.update(FAST)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(options)
    return env


class WorkerProcess:
    """A real ``coco --worker NAME`` process."""

    def __init__(self, name="worker", start_method="fork", env=None,
                 log_dir=None):
        self.name = name
        self.log_path = os.path.join(log_dir or "/tmp",
                                     "worker-%s-%d.log" % (name, os.getpid()))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core4.script.coco", "--worker", name,
             "--start-method", start_method],
            env=env or worker_env(), stdout=self.log,
            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        """What the worker logged so far."""
        self.log.flush()
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def wait_registered(self, db, timeout=30):
        """Wait until the worker's loop is running."""
        ident = "%s@" % self.name
        return wait_for(lambda: db.sys_worker.find_one(
            {"_id": {"$regex": "^" + ident}, "phase": "loop"}),
            timeout, message="worker %s to register" % self.name)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def kill9(self):
        """kill -9 the worker only (its launcher notices and exits)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout=30):
        return self.proc.wait(timeout)

    def stop(self):
        """Stop the worker and everything it started."""
        if self.proc.poll() is None:
            try:
                children = psutil.Process(self.proc.pid).children(
                    recursive=True)
            except psutil.Error:
                children = []
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            for child in children:
                try:
                    child.kill()
                except psutil.Error:
                    pass
        self.log.close()


def find_job(db, _id):
    """The job document, from the queue or else the journal."""
    return db.sys_queue.find_one({"_id": _id}) or \
        db.sys_journal.find_one({"_id": _id})


def wait_state(db, _id, *states, timeout=20, worker=None):
    """Wait until job ``_id`` is in one of ``states``; return its document.
    On a timeout the message shows the job and the worker's log."""
    def reached():
        doc = find_job(db, _id)
        return doc if doc and doc["state"] in states else None
    try:
        return wait_for(reached, timeout, message="job %s to be %s" % (
            _id, "/".join(states)))
    except AssertionError as exc:
        doc = find_job(db, _id) or {}
        log = worker.output()[-3000:] if worker else ""
        raise AssertionError("%s; now %s, last_error %s\n%s" % (
            exc, doc.get("state"), doc.get("last_error"), log)) from None
