"""Claims that scale: the job rate with a large backlog of future jobs.

Runs N no-op jobs (default 500) on one worker, once with nothing else in
the queue and once with M other jobs (default 20,000) waiting in the
future (``deferred``, due in a day), in interleaved rounds, and prints
jobs/s of each and their ratio per round and as the median::

    .venv/bin/python bench/backlog.py [--jobs 500] [--backlog 20000]
                                      [--rounds 3]

The rate is counted from the first job start to the last job end (the
jobs' ``started_at`` and ``finished_at`` in ``sys_journal``). Each run uses
a fresh database on an embedded server in a temporary core4 home. Target
(issue 11): the rate with the backlog is at least 70 % of the rate
without.
"""

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.throughput import (NOOP, configure, journal_count,  # noqa: E402
                              start_workers, stop_workers)


def add_backlog(queue, count):
    """Insert ``count`` deferred jobs due in a day (copies of a real job
    document with their own ids and arguments)."""
    from bson import ObjectId
    template = queue.enqueue(NOOP, backlog=-1)
    doc = queue.sys.queue.find_one({"_id": template._id})
    queue.sys.queue.delete_one({"_id": template._id})
    due = doc["query_at"] + datetime.timedelta(days=1)
    batch = []
    for i in range(count):
        _id = ObjectId()
        batch.append(dict(doc, _id=_id, _hash=str(_id), args={"backlog": i},
                          state="deferred", query_at=due))
        if len(batch) == 1000:
            queue.sys.queue.insert_many(batch)
            batch = []
    if batch:
        queue.sys.queue.insert_many(batch)


def rate(home, jobs, backlog, log, label):
    """Return jobs/s of ``jobs`` no-op jobs on one worker with ``backlog``
    future jobs in the queue."""
    queue = configure(home, "bench_backlog_%s" % label)
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    queue.setup()
    if backlog:
        add_backlog(queue, backlog)
    for i in range(jobs):
        queue.enqueue(NOOP, i=i)
    procs = start_workers(1, "fork", log)
    deadline = time.monotonic() + 600
    while journal_count(queue) < jobs:
        if time.monotonic() > deadline or procs[0].poll() is not None:
            stop_workers(queue, procs)
            raise SystemExit("the worker did not finish (see %s)" % log.name)
        time.sleep(0.2)
    stop_workers(queue, procs)
    docs = list(queue.sys.journal.find({}, {"started_at": 1,
                                            "finished_at": 1}))
    first = min(doc["started_at"] for doc in docs)
    last = max(doc["finished_at"] for doc in docs)
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    return len(docs) / (last - first).total_seconds()


def main():
    """Run the interleaved rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    home = tempfile.mkdtemp(prefix="core4-bench-backlog-")
    from core4.mongo import embedded
    ratios = []
    try:
        with open(os.path.join(home, "workers.log"), "wb") as log:
            for round_no in range(1, ns.rounds + 1):
                empty = rate(home, ns.jobs, 0, log, "empty%d" % round_no)
                full = rate(home, ns.jobs, ns.backlog, log,
                            "full%d" % round_no)
                ratios.append(full / empty)
                print("round %d: %d jobs alone %.1f jobs/s, with %d future "
                      "jobs %.1f jobs/s, ratio %.2f" % (
                          round_no, ns.jobs, empty, ns.backlog, full,
                          full / empty), flush=True)
    finally:
        embedded.stop_server(os.path.join(home, "mongo"))
        shutil.rmtree(home, ignore_errors=True)
    print("median ratio with / without the backlog: %.2f (target >= 0.70)"
          % statistics.median(ratios))


if __name__ == "__main__":
    main()
