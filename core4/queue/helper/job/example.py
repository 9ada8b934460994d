"""Example jobs: a job that sleeps, prints and reports progress."""

import datetime
import time

from core4.queue.job import CoreJob


class DummyJob(CoreJob):
    """Sleep for ``sleep`` seconds (default 3), printing a line and
    reporting progress every ``loop_time`` seconds (default 0.5)."""

    author = "mra"
    progress_interval = 0.5

    def execute(self, sleep=3, loop_time=0.5, **kwargs):
        sleep = float(sleep or 3)
        loop_time = min(float(loop_time or 0.5), sleep)
        start = time.monotonic()
        line = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= sleep:
                break
            line += 1
            print("line %d at %s, progress %3d%%" % (
                line, datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"), elapsed / sleep * 100),
                flush=True)
            self.progress(elapsed / sleep, "%.1f of %.1f seconds" % (
                elapsed, sleep))
            time.sleep(min(loop_time, sleep - elapsed))
        self.progress(1.0, "done after %d lines" % line, force=True)


class NoopJob(CoreJob):
    """Do nothing: measures the cost of running a job (``bench/``)."""

    author = "mra"

    def execute(self, **kwargs):
        pass
