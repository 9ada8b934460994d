"""Claims won and lost when several workers share the jobs out.

Every worker sees every change event and scans the same queue; workers
share the due jobs out (:mod:`core4.queue.claim`) so that they do not race
for the same jobs. For N no-op jobs (default 1,000) on W workers (default
2) this prints the claims each worker won and lost, as published in
``sys_worker``, in two cases: the jobs queued before the workers start (a
backlog: the workers find them by scans), and the jobs enqueued while the
workers are idle (they learn of them from their change streams)::

    .venv/bin/python bench/share.py [--jobs 1000] [--workers 2]
                                    [--max-parallel 64] [--sleep 0]

Before jobs were shared out, each worker tried to claim every job: about
N × (W - 1) claims were lost. It also prints the claims given back because
the name was at its ``max_parallel`` (claims won beyond the N jobs): with
``--max-parallel 15`` (the default configuration's) and two workers of 16
slots, about one claim in four was, before the workers kept to shares of
the places. The limit binds when jobs overlap: with ``--sleep S`` each job
sleeps ``S`` seconds (``bench.peers.SleepJob``) instead of doing nothing.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core4.mongo import to_datetime  # noqa: E402
from bench.throughput import (NOOP, bench_home,  # noqa: E402
                              configure, journal_count, start_workers,
                              stop_workers)

#: a job that sleeps ``sleep`` seconds
SLEEP_JOB = "bench.peers.SleepJob"


def claims_of(queue, workers, timeout=60):
    """Wait until each of the ``workers`` workers published its claims
    after the last job ended (at its next heartbeat); return
    ``{worker: {"won": n, "lost": n}}``."""
    from core4.mongo import now
    since = now()
    deadline = time.monotonic() + timeout
    while True:
        docs = list(queue.sys.worker.find({"kind": "worker",
                                           "phase": "loop"}))
        fresh = [doc for doc in docs if doc.get("heartbeat")
                 and to_datetime(doc["heartbeat"]) > since]
        if len(fresh) == workers or time.monotonic() > deadline:
            return {doc["_id"]: doc.get("claims") or {} for doc in docs}
        time.sleep(0.5)


def run(home, jobs, workers, backlog, log, max_parallel=64, sleep=0.0):
    """Run ``jobs`` no-op jobs (or jobs that sleep ``sleep`` seconds) of
    ``max_parallel`` on ``workers`` workers, queued before they start
    (``backlog``) or while they are idle; return (jobs/s, claims)."""
    name, args = (SLEEP_JOB, {"sleep": sleep}) if sleep else (NOOP, {})
    configure(home, "bench_share_%s" % ("backlog" if backlog else "idle"))
    os.environ["CORE4_OPTION_job__max_parallel"] = "!!int %d" % max_parallel
    from core4.config import reset_config
    from core4.queue.queue import CoreQueue
    reset_config()
    queue = CoreQueue()
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    queue.sys.worker.drop()
    if backlog:
        for i in range(jobs):
            queue.enqueue(name, i=i, **args)
    start = time.monotonic()
    procs = start_workers(workers, "fork", log)
    if not backlog:
        while queue.sys.worker.count_documents({"phase": "loop"}) < workers:
            time.sleep(0.1)
        time.sleep(6)  # a heartbeat: each worker has seen the others
        start = time.monotonic()
        for i in range(jobs):
            queue.enqueue(name, i=i, **args)
    while journal_count(queue) < jobs:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker died (see %s)" % log.name)
        time.sleep(0.1)
    rate = jobs / (time.monotonic() - start)
    claims = claims_of(queue, workers)
    stop_workers(queue, procs)
    return rate, claims


def main():
    """Print jobs/s and the claims won and lost in both cases."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-parallel", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=0.0)
    ns = parser.parse_args()
    if ns.jobs < 1 or ns.workers < 1 or ns.max_parallel < 1:
        parser.error("--jobs, --workers and --max-parallel must be >= 1")
    if not 0 <= ns.sleep <= 60:
        parser.error("--sleep must be between 0 and 60 seconds")
    with bench_home() as (home, log):
        for backlog in (True, False):
            rate, claims = run(home, ns.jobs, ns.workers, backlog, log,
                               ns.max_parallel, ns.sleep)
            lost = sum(c.get("lost", 0) for c in claims.values())
            back = sum(c.get("won", 0) for c in claims.values()) - ns.jobs
            print("%s: %.1f jobs/s, %d claims lost, %d given back (%s)" % (
                "queued before the workers start" if backlog else
                "enqueued while the workers are idle", rate, lost, back,
                ", ".join("%s won %d lost %d" % (
                    name, c.get("won", 0), c.get("lost", 0))
                    for name, c in sorted(claims.items()))), flush=True)


if __name__ == "__main__":
    main()
