"""Worker throughput and dispatch latency on the embedded NX-27017 server.

Prints, for N no-op jobs (default 1,000), jobs/s with 1 and 2 workers in
fork mode (warm launcher) and in cold-spawn mode, and the dispatch latency
(enqueue → the job's ``execute()`` begins) p50/p99 on an idle worker::

    .venv/bin/python bench/throughput.py [--jobs 1000] [--spawn-jobs 1000]
                                         [--latency-samples 100]

Each scenario uses a fresh database on an embedded server in a temporary
core4 home (nothing touches ``~/.core4``).
"""

import argparse
import contextlib
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NOOP = "core4.queue.helper.job.example.NoopJob"
STAMP = "bench.jobs.StampJob"


def configure(home, database):
    """Point this process (and the workers it starts) at ``database`` on
    the embedded server under ``home``."""
    from core4.config import reset_config
    os.environ.pop("CORE4_OPTION_DEFAULT__mongo_url", None)
    os.environ["CORE4_OPTION_folder__home"] = home
    os.environ["CORE4_OPTION_DEFAULT__mongo_database"] = database
    os.environ["CORE4_OPTION_logging__stderr"] = "WARNING"
    os.environ["CORE4_OPTION_worker__max_jobs"] = "!!int 16"
    os.environ["CORE4_OPTION_job__max_parallel"] = "!!int 64"
    os.environ["PYTHONPATH"] = ROOT
    # Python's default: modules are compiled once into __pycache__; with
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) every process that
    # imports a module core4 or a peer did not preload compiles its source
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    reset_config()
    from core4.queue.queue import CoreQueue
    return CoreQueue()


def journal_count(queue):
    """The number of jobs in ``sys_journal``, exact and cheap
    (:func:`core4.mongo.compat.count`): ``count_documents`` reads every
    document on the embedded server, so a poll with it would compete with
    the workers for the server's one lock and inflate its CPU figure."""
    from core4.mongo.compat import count
    return count(queue.sys.journal)


def start_workers(count, method, log):
    """Start ``count`` workers in ``method`` mode."""
    return [subprocess.Popen(
        [sys.executable, "-m", "core4.script.coco", "--worker",
         "bench%d" % i, "--start-method", method],
        stdout=log, stderr=subprocess.STDOUT) for i in range(count)]


def stop_workers(queue, workers):
    """Halt the workers and wait for them."""
    queue.halt()
    for proc in workers:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def throughput(home, jobs, workers, method, log):
    """Return jobs/s for ``jobs`` queued no-op jobs and ``workers``."""
    queue = configure(home, "bench_%s_%d_%d" % (method, workers, jobs))
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    for i in range(jobs):
        queue.enqueue(NOOP, i=i)
    start = time.monotonic()
    procs = start_workers(workers, method, log)
    while journal_count(queue) < jobs:
        if any(p.poll() is not None for p in procs):
            log.flush()
            with open(log.name, "rb") as handle:
                sys.stderr.write(handle.read()[-4000:].decode())
            raise SystemExit("a worker died (its log above)")
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    stop_workers(queue, procs)
    return jobs / elapsed


class StampPipe:
    """A named pipe under ``home`` on which :class:`bench.jobs.StampJob`
    (given ``fifo=pipe.path``) writes the time its ``execute()`` began.

    The benchmark blocks on the pipe, as the peers' drivers block on a
    redis list: nothing polls the database while a job is dispatched, so
    the measurement adds no load to the server it measures."""

    def __init__(self, home):
        self.path = os.path.join(home, "stamps.fifo")
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.mkfifo(self.path)
        # read and write: a job closing its end is never an end of file
        self.fd = os.open(self.path, os.O_RDWR)
        self.buffer = b""

    def wait(self, timeout):
        """Return the next time stamp (epoch seconds), or None after
        ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            self.buffer += os.read(self.fd, 4096)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return float(line)

    def close(self):
        """Remove and close the pipe (a job that comes later finds no
        pipe and writes nothing)."""
        os.unlink(self.path)
        os.close(self.fd)


def latency(home, samples, log):
    """Return dispatch latencies in ms (enqueue → execute() begins)."""
    queue = configure(home, "bench_latency")
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    procs = start_workers(1, "fork", log)
    pipe = StampPipe(home)
    try:
        queue.enqueue(STAMP, i=-1, fifo=pipe.path)
        if pipe.wait(120) is None:
            raise SystemExit("the warm-up job did not run")
        found = []
        for i in range(samples):
            time.sleep(0.2)  # let the worker go idle
            at = time.time()
            queue.enqueue(STAMP, i=i, fifo=pipe.path)
            began = pipe.wait(60)
            if began is None:
                raise SystemExit("a job did not start in 60 s")
            found.append((began - at) * 1000)
    finally:
        pipe.close()
        stop_workers(queue, procs)
    return found


@contextlib.contextmanager
def bench_home():
    """A temporary core4 home and the workers' log in it, as ``(home,
    log)``; the embedded server started in it is stopped and the home
    removed at the end."""
    home = tempfile.mkdtemp(prefix="core4-bench-")
    from core4.mongo import embedded
    try:
        with open(os.path.join(home, "workers.log"), "wb") as log:
            yield home, log
    finally:
        embedded.stop_server(os.path.join(home, "mongo"))
        shutil.rmtree(home, ignore_errors=True)


def main():
    """Run every scenario and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--spawn-jobs", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=100)
    ns = parser.parse_args()
    with bench_home() as (home, log):
        results = {}
        for method, jobs in (("fork", ns.jobs), ("spawn", ns.spawn_jobs)):
            for workers in (1, 2):
                rate = throughput(home, jobs, workers, method, log)
                results[method, workers] = rate
                print("%-5s %d worker(s): %5d no-op jobs  %7.1f jobs/s"
                      % (method, workers, jobs, rate), flush=True)
        ratio = results["fork", 1] / results["spawn", 1]
        print("fork / spawn (1 worker): %.1fx" % ratio)
        lat = sorted(latency(home, ns.latency_samples, log))
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        print("dispatch latency on an idle worker (%d samples): "
              "p50 %.1f ms, p99 %.1f ms" % (
                  len(lat), statistics.median(lat), p99))


if __name__ == "__main__":
    main()
