"""The job cookie (issue 19, item 8): ``self.cookie`` holds key/values per
job class in ``sys_cookie``, shared by all runs and workers; after every
successful run the worker records ``last_runtime`` in it.

The jobs below run in real ``coco --worker`` processes (they import this
module by its name ``tests.test_cookie``).
"""

import datetime
import time

import pytest

from core4.error import Core4UsageError
from core4.mongo import now
from core4.queue.cookie import Cookie, record_runtime
from core4.queue.helper.functool import execute
from core4.queue.job import CoreJob
from core4.queue.queue import CoreQueue
from tests.support import wait_for, wait_state

#: increments of each of the two concurrent runs
ROUNDS = 40


class CountJob(CoreJob):
    """Waits until ``runs`` runs are in, then counts concurrently."""

    author = "mra"

    def execute(self, run=0, runs=2, **kwargs):
        self.cookie.inc("started")
        deadline = time.monotonic() + 60
        while self.cookie.get("started", 0) < runs:
            if time.monotonic() > deadline:
                raise RuntimeError("the other run did not start")
            time.sleep(0.05)
        for number in range(ROUNDS):
            self.cookie.inc("count")
            self.cookie.dec("down", 2)
            self.cookie.max("peak", run * 1000 + number)
            self.cookie.min("low", run * 1000 + number)
        self.cookie.set("run%d" % run, "done")


class OnceJob(CoreJob):
    """Completes, or fails when asked to."""

    author = "mra"

    def execute(self, fail=False, **kwargs):
        self.cookie.set(seen=True, fail=fail)
        if fail:
            raise RuntimeError("failed on purpose")


# the cookie's operations ---------------------------------------------------

def test_cookie_operations(core4_env, db):
    job = OnceJob()
    cookie = job.cookie
    assert isinstance(cookie, Cookie) and cookie is job.cookie
    assert cookie.name == "tests.test_cookie.OnceJob"
    assert cookie.get("missing") is None
    assert cookie.get("missing", 7) == 7
    assert not cookie.has_key("int")
    cookie.set("int", 2)
    assert cookie.get("int") == 2 and cookie.has_key("int")
    cookie.set("str", "ene mene mu")
    assert cookie.get("str") == "ene mene mu"
    cookie.set(first=1, second=2, third=3)
    assert [cookie.get(key) for key in ("first", "second", "third")] == [
        1, 2, 3]
    cookie.inc("int", 4)
    assert cookie.get("int") == 6
    cookie.inc("int")
    cookie.dec("int", 10)
    assert cookie.get("int") == -3
    cookie.inc("fresh")              # a missing key counts as 0
    cookie.dec("fresher")
    assert (cookie.get("fresh"), cookie.get("fresher")) == (1, -1)
    cookie.set("max", 4)
    cookie.max("max", 8)
    cookie.max("max", 2)
    assert cookie.get("max") == 8
    cookie.set("min", 4)
    cookie.min("min", 8)
    cookie.min("min", 2)
    assert cookie.get("min") == 2
    assert cookie.delete("min") is True
    assert cookie.get("min") is None and not cookie.has_key("min")
    assert cookie.delete("min") is False
    stored = db.sys_cookie.find_one({"_id": "tests.test_cookie.OnceJob"})
    assert stored["int"] == -3 and stored["max"] == 8 and "min" not in stored
    # one cookie per job class, whatever object reads it
    assert Cookie("tests.test_cookie.OnceJob", job.config).get("max") == 8
    assert CountJob().cookie.get("max") is None


def test_cookie_refuses_bad_use(core4_env):
    cookie = OnceJob().cookie
    for key in ("", "a.b", "$set", "_id", 5):
        with pytest.raises(Core4UsageError):
            cookie.set(key, 1)
    with pytest.raises(Core4UsageError):
        cookie.set("a", 1, b=2)
    with pytest.raises(Core4UsageError):
        cookie.set("a")


def test_record_runtime_keeps_the_latest(core4_env, db):
    late = now()
    early = late - datetime.timedelta(hours=1)
    cookies = CoreQueue().sys.cookie
    docs = [{"name": "a.b.C", "state": "complete", "finished_at": late},
            {"name": "a.b.D", "state": "failed", "finished_at": late}, None]
    assert record_runtime(cookies, docs) == 1
    record_runtime(cookies, [dict(docs[0], finished_at=early)])
    assert db.sys_cookie.find_one({"_id": "a.b.C"})["last_runtime"] == late
    assert db.sys_cookie.find_one({"_id": "a.b.D"}) is None


def test_execute_records_last_runtime(core4_env, db):
    before = now()
    doc = execute(OnceJob)
    assert doc["state"] == "complete"
    cookie = db.sys_cookie.find_one({"_id": "tests.test_cookie.OnceJob"})
    assert cookie["seen"] is True or cookie["seen"] == 1
    assert before <= cookie["last_runtime"] <= now()
    failed = execute(OnceJob, fail=True)
    assert failed["state"] == "error"
    again = db.sys_cookie.find_one({"_id": "tests.test_cookie.OnceJob"})
    assert again["last_runtime"] == cookie["last_runtime"]


# real workers ----------------------------------------------------------------

def test_two_concurrent_runs_share_the_cookie(core4_env, db, start_worker):
    first = start_worker("c1")
    second = start_worker("c2")
    queue = CoreQueue()
    ids = [queue.enqueue(CountJob, run=run)._id for run in (1, 2)]
    for _id in ids:
        wait_state(db, _id, "complete", timeout=90, worker=first)
    cookie = db.sys_cookie.find_one({"_id": "tests.test_cookie.CountJob"})
    assert cookie["started"] == 2
    assert cookie["count"] == 2 * ROUNDS       # no increment lost
    assert cookie["down"] == -4 * ROUNDS
    assert cookie["peak"] == 2000 + ROUNDS - 1
    assert cookie["low"] == 1000
    assert cookie["run1"] == cookie["run2"] == "done"
    assert second.proc.poll() is None


def test_worker_records_last_runtime_after_success(core4_env, db,
                                                   start_worker):
    """Needs the worker to call core4.queue.cookie.record_runtime for the
    jobs it completed."""
    worker = start_worker()
    queue = CoreQueue()
    failing = queue.enqueue(OnceJob, fail=True)._id
    wait_state(db, failing, "error", timeout=60, worker=worker)
    name = "tests.test_cookie.OnceJob"
    assert "last_runtime" not in db.sys_cookie.find_one({"_id": name})
    good = queue.enqueue(OnceJob)._id
    doc = wait_state(db, good, "complete", timeout=60, worker=worker)
    cookie = wait_for(lambda: db.sys_cookie.find_one(
        {"_id": name, "last_runtime": {"$exists": True}}), 30,
        message="last_runtime in the cookie")
    assert cookie["last_runtime"] == doc["finished_at"]
