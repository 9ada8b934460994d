"""A job that proves it never runs twice at the same time: it holds an
exclusive ``flock`` on a witness file while it runs, and appends one line
per event (``start``, ``end``, ``overlap``) with its pid to a log."""

import fcntl
import os
import time

from core4.queue.job import CoreJob


def record(path, kind):
    """Append ``kind pid time`` to ``path`` (one write, O_APPEND)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("%s %d %.3f\n" % (kind, os.getpid(),
                                        time.time())).encode())
    finally:
        os.close(fd)


class FenceJob(CoreJob):
    """Runs ``seconds`` while holding the lock of ``witness``."""

    author = "mra"

    def execute(self, witness, seconds=10.0, **kwargs):
        log = witness + ".log"
        lock = open(witness + ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record(log, "overlap")
            raise RuntimeError("another execution holds the lock")
        record(log, "start")
        end = time.monotonic() + float(seconds)
        while time.monotonic() < end:
            time.sleep(0.05)
        record(log, "end")
