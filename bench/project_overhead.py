"""Per-job overhead of a project job in its own virtualenv: warm launcher
(fork mode) vs a fresh interpreter per job (spawn mode).

Creates a throw-away project with ``coco --init`` (its ``.venv`` gets core4
and the project), a no-op job in it, and runs N jobs of it through one
worker with one job slot (``worker.max_jobs`` 1, so jobs run one after
another and the time per job is the overhead of starting, running and
recording it) in each mode, on the embedded server in a temporary home::

    .venv/bin/python bench/project_overhead.py [--jobs 200]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.throughput import journal_count  # noqa: E402

JOB = '''import core4.queue.job


class NoopJob(core4.queue.job.CoreJob):
    """Does nothing."""
    author = "bench"

    def execute(self, **kwargs):
        pass
'''


def run_jobs(queue, jobs, method, log):
    """Seconds per job for ``jobs`` project no-op jobs with one worker."""
    from core4.queue.remote import enqueue_anywhere
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    for i in range(jobs):
        enqueue_anywhere(queue, "benchpro.noop.NoopJob", i=i) if i == 0 \
            else queue.sys.queue.insert_one(_copy(queue, i))
    worker = subprocess.Popen(
        [sys.executable, "-m", "core4.script.coco", "--worker", "bench",
         "--start-method", method], stdout=log, stderr=subprocess.STDOUT)
    start = first = None
    while True:
        done = journal_count(queue)
        if done and start is None:
            # timed from the first completion: worker start-up excluded
            start, first = time.monotonic(), done
        if done >= jobs:
            break
        if worker.poll() is not None:
            raise SystemExit("the worker died")
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    queue.halt()
    worker.wait(60)
    return elapsed / (jobs - first)


def _copy(queue, i):
    """A copy of the first enqueued job document with other args."""
    from bson import ObjectId
    from core4.queue.job import args_hash
    doc = queue.sys.queue.find_one({"name": "benchpro.noop.NoopJob"})
    doc = dict(doc, _id=ObjectId(), args={"i": i})
    doc["_hash"] = args_hash(doc["args"])
    return doc


def main():
    """Create the project, run both modes, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    ns = parser.parse_args()
    home = tempfile.mkdtemp(prefix="core4-bench-home-")
    work = tempfile.mkdtemp(prefix="core4-bench-project-")
    os.environ.pop("CORE4_OPTION_DEFAULT__mongo_url", None)
    os.environ.update({"CORE4_OPTION_folder__home": home,
                       "CORE4_OPTION_DEFAULT__mongo_database": "bench",
                       "CORE4_OPTION_logging__stderr": "WARNING",
                       "CORE4_OPTION_job__max_parallel": "!!int 64",
                       "CORE4_OPTION_worker__max_jobs": "!!int 1"})
    from core4.config import reset_config
    from core4.mongo import embedded
    from core4.queue.queue import CoreQueue
    reset_config()
    try:
        subprocess.run([sys.executable, "-m", "core4.script.coco", "--init",
                        "benchpro", "benchmark project", "--yes"], cwd=work,
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(work, "benchpro", "benchpro", "noop.py"),
                  "w") as handle:
            handle.write(JOB)
        queue = CoreQueue()
        with open(os.path.join(home, "workers.log"), "wb") as log:
            fork = run_jobs(queue, ns.jobs, "fork", log)
            spawn = run_jobs(queue, max(20, ns.jobs // 4), "spawn", log)
        print("project job overhead, %d jobs: warm launcher (fork) %.1f ms "
              "per job, fresh interpreter (spawn) %.1f ms per job: %.1fx "
              "faster" % (ns.jobs, fork * 1000, spawn * 1000, spawn / fork))
    finally:
        embedded.stop_server(os.path.join(home, "mongo"))
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
