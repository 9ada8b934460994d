"""Jobs used by the benchmarks."""

import errno
import os
import time

from core4.queue.job import CoreJob


class StampJob(CoreJob):
    """Record the time execute() began (for dispatch latency): print it,
    and write it as a line to the named pipe ``fifo`` if given (see
    :class:`bench.throughput.StampPipe`)."""

    author = "mra"

    def execute(self, fifo=None, **kwargs):
        line = "%.6f" % time.time()
        print(line)
        if fifo:
            try:  # (never waits: a pipe nobody reads any more is skipped)
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENXIO):
                    return
                raise
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)
