"""``self.defer(msg, *args)`` (issue 19, item 2): the message is formatted
like a log call and becomes the deferral message in ``last_error`` and in
the log. The job runs in a real ``coco --worker`` (it imports this module
by its name ``tests.test_defer_args``)."""

import pytest

from core4.error import CoreJobDeferred
from core4.queue.helper.functool import execute
from core4.queue.job import CoreJob
from core4.queue.queue import CoreQueue
from tests.support import wait_for, wait_state


class WaitForFile(CoreJob):
    """Defers with a formatted message."""

    author = "mra"
    defer_time = 600

    def execute(self, name="sales.csv", **kwargs):
        self.defer("waiting for file [%s] (%d tries)", name, 3)


def test_defer_formats_its_message(core4_env):
    job = WaitForFile()
    with pytest.raises(CoreJobDeferred) as info:
        job.defer("waiting for file [%s]", "a.csv")
    assert str(info.value) == "waiting for file [a.csv]"
    with pytest.raises(CoreJobDeferred) as info:
        job.defer("100% sure")           # no args: taken as it is
    assert str(info.value) == "100% sure"
    with pytest.raises(CoreJobDeferred) as info:
        job.defer("files", "a.csv", "b.csv")   # no placeholders: joined
    assert str(info.value) == "files a.csv b.csv"
    with pytest.raises(CoreJobDeferred) as info:
        job.defer()
    assert str(info.value) == "deferred"


def test_execute_defers_with_arguments(core4_env):
    doc = execute(WaitForFile, name="x.csv")
    assert doc["state"] == "deferred"
    assert doc["last_error"]["exception"] == \
        "waiting for file [x.csv] (3 tries)"


def test_worker_job_defers_with_arguments(core4_env, db, start_worker):
    worker = start_worker()
    _id = CoreQueue().enqueue(WaitForFile, name="in.csv")._id
    doc = wait_state(db, _id, "deferred", timeout=60, worker=worker)
    assert doc["last_error"]["exception"] == \
        "waiting for file [in.csv] (3 tries)"
    record = wait_for(lambda: db.sys_log.find_one(
        {"identifier": str(_id),
         "message": {"$regex": r"waiting for file \[in\.csv\] \(3 tries\)"}}),
        30, message="the deferral message in sys_log")
    assert record["level"] != "ERROR", record
