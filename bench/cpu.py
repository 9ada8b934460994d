"""CPU time per no-op job, by process, with 1 and 2 workers.

Throughput on a shared 2-core machine depends on what else runs; the CPU
each part of core4 spends per job does much less. For N pre-enqueued no-op
jobs (default 1,000) this prints, per job, the CPU milliseconds (user +
system) of the embedded NX-27017 server, the workers, their launchers and
the forked job processes, and what they add up to::

    .venv/bin/python bench/cpu.py [--jobs 1000] [--rounds 2]

Rounds alternate 1 and 2 workers. The sum tells the best rate two cores can
give (2,000 ms / sum per job), whatever the scheduling.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.throughput import (NOOP, configure, journal_count,  # noqa: E402
                              start_workers, stop_workers)

PARTS = ("nx", "worker", "launcher", "jobs")


def _cpu(times, children=False):
    spent = times.user + times.system
    if children:
        spent += times.children_user + times.children_system
    return spent


def server_pid(home):
    """Return the pid of the embedded server under ``home``."""
    with open(os.path.join(home, "mongo", "server.json")) as handle:
        return json.load(handle)["pid"]


def snapshot(nx, workers):
    """Return CPU seconds by part, now."""
    spent = dict.fromkeys(PARTS, 0.0)
    spent["nx"] = _cpu(nx.cpu_times())
    for proc in workers:
        worker = psutil.Process(proc.pid)
        spent["worker"] += _cpu(worker.cpu_times())
        for child in worker.children():
            times = child.cpu_times()
            spent["launcher"] += times.user + times.system
            spent["jobs"] += times.children_user + times.children_system
    return spent


def one_run(home, jobs, count, log):
    """Run ``jobs`` no-op jobs on ``count`` workers; return (jobs/s, CPU
    ms per job by part)."""
    queue = configure(home, "bench_cpu_%d" % count)
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    for i in range(jobs):
        queue.enqueue(NOOP, i=i)
    nx = psutil.Process(server_pid(home))
    nx_before = _cpu(nx.cpu_times())
    start = time.monotonic()
    procs = start_workers(count, "fork", log)
    while journal_count(queue) < jobs:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a worker died (see %s)" % log.name)
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    spent = snapshot(nx, procs)
    spent["nx"] -= nx_before
    stop_workers(queue, procs)
    return jobs / elapsed, {k: v * 1000.0 / jobs for k, v in spent.items()}


def main():
    """Alternate 1 and 2 workers for some rounds and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    ns = parser.parse_args()
    home = tempfile.mkdtemp(prefix="core4-bench-")
    from core4.mongo import embedded
    results = {1: [], 2: []}
    try:
        with open(os.path.join(home, "workers.log"), "wb") as log:
            configure(home, "bench_cpu_warm").sys.queue.find_one()
            for rnd in range(ns.rounds):
                for count in (1, 2):
                    rate, per_job = one_run(home, ns.jobs, count, log)
                    results[count].append((rate, per_job))
                    print("round %d, %d worker(s): %6.1f jobs/s  %s  sum "
                          "%.2f ms/job" % (
                              rnd + 1, count, rate, "  ".join(
                                  "%s %.2f" % (k, per_job[k]) for k in PARTS),
                              sum(per_job.values())), flush=True)
        for count in (1, 2):
            rate = statistics.median(r for r, _ in results[count])
            per_job = {k: statistics.median(p[k] for _, p in results[count])
                       for k in PARTS}
            total = sum(per_job.values())
            print("median, %d worker(s): %6.1f jobs/s, CPU ms per job: %s, "
                  "sum %.2f (two cores allow at most %.0f jobs/s)" % (
                      count, rate, ", ".join("%s %.2f" % (k, per_job[k])
                                             for k in PARTS),
                      total, 2000.0 / total))
    finally:
        embedded.stop_server(os.path.join(home, "mongo"))
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
