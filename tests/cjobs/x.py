"""Jobs for the chaos tests (tests/test_chaos.py).

Every job records each of its executions in the collection ``chaos_runs``
of the job's own database: ``{_id: <uuid of this execution>, job: <job id
as str>, pid, worker, token, trial, at}``. A job id found in more than one
record ran more than once. Records are written with
:func:`core4.mongo.retrying`, so a short database outage delays a job but
does not fail it; a retried insert that had landed already raises
DuplicateKeyError on the execution's own ``_id`` and is ignored.
"""

import os
import time
import uuid

import pymongo.errors

from core4.mongo import SystemCollections, retrying
from core4.queue.job import CoreJob

RUNS = "chaos_runs"


def record(job, **extra):
    """Insert one record of this execution; return its ``_id``."""
    runs = SystemCollections(job.config).database()[RUNS]
    locked = job.locked or {}
    doc = {"_id": uuid.uuid4().hex, "job": str(job._id), "pid": os.getpid(),
           "worker": locked.get("worker"), "token": locked.get("token"),
           "trial": job.trial, "at": time.time()}
    doc.update(extra)
    try:
        retrying(runs.insert_one, doc, timeout=120)
    except pymongo.errors.DuplicateKeyError:
        pass  # our own insert landed before its acknowledgement was lost
    return doc["_id"]


class SlowJob(CoreJob):
    """Records its start, sleeps ``sleep`` seconds, records its end."""
    author = "chaos"

    def execute(self, sleep=3.0, **kwargs):
        run = record(self, kind="start")
        time.sleep(sleep)
        record(self, kind="end", start=run)


class RecordJob(CoreJob):
    """Records its execution, then sleeps ``sleep`` seconds (0: none)."""
    author = "chaos"

    def execute(self, sleep=0.0, **kwargs):
        record(self, kind="run")
        if sleep:
            time.sleep(sleep)
