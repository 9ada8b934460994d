"""The worker's view of one running job process: its pid, how to stop it
with all its children, and where its output goes."""

import datetime
import os
import signal
import time

import psutil

from core4.queue import lifecycle

#: prefix of the output kept when a job printed more than the maximum
CUT_MARK = b"[... %d bytes cut ...]\n"


class JobProcess:
    """A job process started by a worker (see :mod:`core4.queue.worker`)."""

    def __init__(self, doc, out_path, result_path, log_path):
        self.doc = doc
        self.out_path = out_path
        self.result_path = result_path
        self.log_path = log_path
        self.pid = None
        self.launcher = None        # the launcher that started it
        self.claimed = None         # monotonic time of the claim
        self.pid_saved = False
        self.done = False           # it reported its outcome written
        self.exit_event = None
        self.reason = None
        self.record = True
        self.term_at = None
        self.kill_grace = None
        self.killed = False
        self.published_size = 0

    def ready(self):
        """True once the worker can record how the job ended: its process
        exited, or it reported :class:`~core4.queue.launcher.launcher.Done`
        (its outcome is written and it is about to exit) and is not being
        stopped."""
        return self.exit_event is not None or (
            self.done and self.term_at is None
            and os.path.exists(self.result_path))

    def remove_files(self):
        """Delete the output and result files of the finished process."""
        for path in (self.out_path, self.result_path, self.log_path):
            if path is None:
                continue
            try:
                os.unlink(path)
            except OSError:
                pass

    def started(self, pid):
        """The launcher reports the process id; deliver a pending stop."""
        self.pid = pid
        if self.term_at is not None:
            self._signal(signal.SIGTERM)

    def terminate(self, reason, grace, record=True):
        """Send SIGTERM to the job's process group (once); SIGKILL follows
        after ``grace`` seconds (see :meth:`escalate`). ``record`` False
        means the job's document is no longer ours to update."""
        if self.term_at is not None:
            return
        self.reason, self.record, self.kill_grace = reason, record, grace
        self.term_at = time.monotonic()
        self._signal(signal.SIGTERM)

    def escalate(self):
        """SIGKILL the process group once the grace period has passed."""
        if self.term_at is None or self.killed:
            return
        if time.monotonic() - self.term_at >= self.kill_grace:
            self.killed = self._signal(signal.SIGKILL)

    def _signal(self, sig):
        if self.pid is None:
            return False
        targets = []
        try:
            targets = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            pass
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for child in targets:  # children that left the process group
            try:
                child.send_signal(sig)
            except psutil.Error:
                pass
        return True


def job_files(out_dir, job_id, logs):
    """The paths of the output, result and (with ``logs``) log files of the
    process of job ``job_id`` in the worker's ``out_dir``."""
    base = os.path.join(out_dir, str(job_id))
    return base + ".out", base + ".result", base + ".log" if logs else None


def terminate_all(jobs, reason, grace):
    """Terminate every job process of ``jobs`` (id -> :class:`JobProcess`):
    SIGTERM, then SIGKILL after ``grace`` seconds."""
    for proc in jobs.values():
        proc.terminate(reason, grace)
        if grace == 0:
            proc.kill_grace = 0
        proc.escalate()


def enforce(queue, jobs, current, grace):
    """Apply what the database says to a worker's job processes ``jobs``
    (id -> :class:`JobProcess`), given its running jobs as stored
    (``current``: id -> document): record each pid once known; stop a
    process whose job was removed or recovered elsewhere (its lease token
    changed: its outcome is no longer ours to record) or killed by request;
    SIGKILL what outlived ``grace`` seconds after its SIGTERM."""
    for job_id, proc in list(jobs.items()):
        if proc.pid and not proc.pid_saved:
            lifecycle.mark_started(queue, proc.doc, proc.pid)
            proc.pid_saved = True
        doc = current.get(job_id)
        token = proc.doc["locked"]["token"]
        if doc is None or (doc.get("locked") or {}).get("token") != token:
            proc.terminate("job removed or recovered elsewhere", grace,
                           record=False)
        elif doc.get("killed_at"):
            proc.terminate("killed by request", grace)
        proc.escalate()


def read_output(path, max_bytes):
    """Return the captured output (str if UTF-8, else bytes), at most the
    last ``max_bytes`` bytes, or None if there was none."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as handle:
        if size > max_bytes:
            handle.seek(size - max_bytes)
            data = (CUT_MARK % (size - max_bytes)) + handle.read()
        else:
            data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def store_output(queue, proc, max_bytes):
    """Store a finished job's output in ``sys_stdout`` and delete the file."""
    _save(queue, proc, read_output(proc.out_path, max_bytes))


def publish_output(queue, proc, max_bytes):
    """Store the output of a running job so far in ``sys_stdout`` if it
    grew since the last time (so ``GET /job/<id>/stdout`` and the
    dashboard show it while the job runs)."""
    try:
        size = os.path.getsize(proc.out_path)
    except (OSError, TypeError):
        return
    if size == proc.published_size:
        return
    proc.published_size = size
    _save(queue, proc, read_output(proc.out_path, max_bytes))


def _save(queue, proc, data):
    # delete and insert, not replace: NX-27017 cannot replace a document
    # with binary output, and a $set would store the TTL's datetime as a
    # string there (see core4.mongo.compat)
    if data is not None:
        queue.sys.stdout.delete_one({"_id": proc.doc["_id"]})
        queue.sys.stdout.insert_one(
            {"_id": proc.doc["_id"], "stdout": data,
             "timestamp": datetime.datetime.now(datetime.timezone.utc)})
