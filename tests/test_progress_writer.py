"""A job's progress reports do not wait for a database that does not
answer (:mod:`core4.queue.launcher.progress`): a report waits a bounded
time for its write, none waits while a write hangs, newer reports replace
older ones not written yet, and the job's end waits a bounded time for
the last one. The end-to-end case (a paused
database server) is in tests/test_outage.py."""

import threading
import time

from core4.queue.launcher.progress import ProgressWriter
from tests.support import wait_for


def test_reports_do_not_wait_for_a_hanging_write():
    release = threading.Event()
    written = []

    def write(value, message):
        release.wait(60)  # as a write to a database that does not answer
        written.append((value, message))

    writer = ProgressWriter(write)
    began = time.monotonic()
    for step in range(1, 6):
        writer.put(step / 10, "step %d" % step, wait=0.5)
    # the first waited its 0.5 s, the others none (the write hangs 60 s)
    assert time.monotonic() - began < 10
    writer.close(timeout=0.2)  # the job ends: the hanging write is left
    assert written == []
    release.set()
    # the first report was being written; of the others only the newest
    wait_for(lambda: len(written) == 2, 30, message="the hanging writes")
    assert written == [(0.1, "step 1"), (0.5, "step 5")]


def test_a_report_is_stored_when_progress_returns():
    written = []
    writer = ProgressWriter(lambda value, message: written.append(value))
    writer.put(0.3, None)
    assert written == [0.3]
    writer.put(0.9, None)
    assert written == [0.3, 0.9]
    writer.close()
    assert not writer.thread.is_alive()


def test_a_job_without_reports_starts_no_thread():
    writer = ProgressWriter(lambda value, message: None)
    writer.close()
    assert writer.thread is None
