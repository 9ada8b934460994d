"""Jobs used by the benchmarks."""

import time

from core4.queue.job import CoreJob


class StampJob(CoreJob):
    """Print the time execute() began (for dispatch latency)."""

    author = "mra"

    def execute(self, **kwargs):
        print("%.6f" % time.time())
