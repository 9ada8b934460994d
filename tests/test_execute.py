"""Tests of core4.queue.helper.functool.execute(): run one job in the
current process and return its final document, leaving nothing behind."""

import datetime
import logging
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # makes tests.jobs importable by its dotted name
    sys.path.insert(0, ROOT)

from core4.error import (CoreJobAbstract, CoreJobInvalid,  # noqa: E402
                         CoreJobNotFound)
from core4.mongo import now, seconds, to_datetime  # noqa: E402
from core4.queue.helper.functool import execute  # noqa: E402
from core4.queue.job import CoreJob  # noqa: E402
from core4.queue.queue import CoreQueue  # noqa: E402
from tests.jobs import run  # noqa: E402


@pytest.fixture
def env(core4_env):
    """core4_env, with the jobs' scratch list emptied."""
    run.SEEN.clear()
    run.COLLECTION = core4_env.db().sys_queue
    yield core4_env
    run.COLLECTION = None


def assert_nothing_left(env):
    db = env.db()
    for name in ("sys_queue", "sys_journal", "sys_stdout"):
        assert db[name].count_documents({}) == 0, name


def assert_recent(value, expected, slack=5.0):
    """``value`` is an aware datetime within ``slack`` seconds of the
    datetime ``expected``."""
    assert isinstance(value, datetime.datetime), value
    assert value.tzinfo is not None, value
    assert abs((value - expected).total_seconds()) < slack, (value, expected)


def test_complete_in_current_process(env, capsys):
    before = now()
    doc = execute(run.RecordJob, x=1, y="two")
    assert run.SEEN == [{"pid": os.getpid(), "kwargs": {"x": 1, "y": "two"},
                         "_id": doc["_id"], "trial": 1}]
    assert doc["state"] == "complete"
    assert doc["name"] == "tests.jobs.run.RecordJob"
    assert doc["args"] == {"x": 1, "y": "two"}
    assert doc["prog"]["value"] == 1.0
    assert doc["trial"] == 1
    assert doc["runtime"] > 0
    assert before <= doc["started_at"] <= doc["finished_at"] <= now()
    assert "locked" not in doc
    # output is not captured: it went to this process's stdout
    assert "hello from RecordJob %s" % doc["_id"] in capsys.readouterr().out
    assert_nothing_left(env)


def test_execute_by_name(env):
    doc = execute("tests.jobs.run.RecordJob", z=3)
    assert doc["state"] == "complete"
    assert [seen["kwargs"] for seen in run.SEEN] == [{"z": 3}]
    assert_nothing_left(env)


def test_execute_twice_same_args(env):
    # nothing is left behind, so the same job and args can run again
    assert execute(run.RecordJob, x=1)["state"] == "complete"
    assert execute(run.RecordJob, x=1)["state"] == "complete"
    assert len(run.SEEN) == 2
    assert run.SEEN[0]["_id"] != run.SEEN[1]["_id"]
    assert_nothing_left(env)


def test_other_queued_jobs_untouched(env):
    other = CoreQueue().enqueue("tests.jobs.run.RecordJob", x=1)
    doc = execute(run.RecordJob, x=2)
    assert doc["state"] == "complete"
    assert [seen["kwargs"] for seen in run.SEEN] == [{"x": 2}]
    left = list(env.db().sys_queue.find())
    assert [(d["_id"], d["state"]) for d in left] == [(other._id, "pending")]
    assert env.db().sys_journal.count_documents({}) == 0


def test_failed_with_attempts_left(env):
    doc = execute(run.FailJob, attempts=3)
    assert doc["state"] == "failed"
    assert doc["trial"] == 1
    assert doc["attempts_left"] == 2
    error = doc["last_error"]
    assert "ValueError" in error["exception"]
    assert "boom 42" in error["exception"]
    assert_recent(error["timestamp"], now())
    assert isinstance(error["traceback"], list)
    assert all(isinstance(line, str) for line in error["traceback"])
    assert any("boom 42" in line for line in error["traceback"])
    assert any("run.py" in line for line in error["traceback"])
    # retried after error_time
    assert_recent(doc["query_at"], doc["finished_at"] + seconds(600), slack=1)
    assert_nothing_left(env)


def test_error_without_attempts_left(env):
    doc = execute(run.FailJob)
    assert doc["state"] == "error"
    assert doc["attempts_left"] == 0
    assert "boom 42" in doc["last_error"]["exception"]
    assert any("boom 42" in line for line in doc["last_error"]["traceback"])
    assert_nothing_left(env)


def test_deferred(env):
    doc = execute(run.DeferJob, defer_time=120)
    assert doc["state"] == "deferred"
    assert_recent(doc["query_at"], now() + seconds(120))
    assert_recent(doc["query_at"], doc["finished_at"] + seconds(120), slack=1)
    assert "not yet" in doc["last_error"]["exception"]
    assert_recent(doc["inactive_at"], doc["started_at"] + seconds(3600),
                  slack=1)
    assert_nothing_left(env)


def test_deferred_after_defer_max_is_inactive(env):
    # the job runs longer than defer_max since its first start, then defers
    doc = execute(run.SlowDeferJob, defer_max=0.05)
    assert len(run.SEEN) == 1
    # run.SEEN holds the job's time.time() when it deferred
    assert to_datetime(run.SEEN[0]) >= doc["started_at"] + seconds(0.05)
    assert doc["state"] == "inactive"
    assert "still waiting" in doc["last_error"]["exception"]
    assert_nothing_left(env)


@pytest.mark.parametrize("kwargs,expected", [
    ({"b": 1}, "'b'"),
    ({}, "'a'"),
])
def test_args_do_not_match_signature(env, kwargs, expected):
    doc = execute(run.SignatureJob, **kwargs)
    assert run.SEEN == []
    assert doc["state"] == "error"
    message = doc["last_error"]["exception"]
    assert "TypeError" in message or "argument" in message
    assert expected in message
    assert_nothing_left(env)


def test_progress_is_throttled(env):
    doc = execute(run.ProgressJob)
    # (value, progress() returned, prog.value and message in sys_queue)
    assert run.SEEN == [
        (0.1, True, 0.1, "at 0.1"),     # first update always reaches the db
        (0.2, False, 0.1, "at 0.1"),    # throttled
        (0.3, True, 0.3, "at 0.3"),     # forced
        (0.4, False, 0.3, "at 0.3"),    # throttled again
    ]
    assert doc["state"] == "complete"
    assert doc["prog"]["value"] == 1.0
    assert_nothing_left(env)


def test_progress_interval_small_lets_updates_through(env):
    doc = execute(run.ProgressJob, progress_interval=1e-9)
    assert [seen[2] for seen in run.SEEN] == [0.1, 0.2, 0.3, 0.4]
    assert doc["state"] == "complete"
    assert_nothing_left(env)


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_logger_records_carry_job_id(env):
    handler = ListHandler()
    logger = logging.getLogger("core4")
    logger.addHandler(handler)
    try:
        doc = execute(run.LogJob)
    finally:
        logger.removeHandler(handler)
    assert run.SEEN == [doc["_id"]]
    mine = [r for r in handler.records if "LogJob" in r.getMessage()]
    assert [r.getMessage() for r in mine] == [
        "hello from LogJob", "warning from LogJob"]
    for record in mine:
        assert record.identifier == str(doc["_id"])
        assert record.qual_name == "tests.jobs.run.LogJob"
        assert record.name.startswith("core4.")
    assert [r.levelno for r in mine] == [logging.INFO, logging.WARNING]
    assert_nothing_left(env)


@pytest.mark.parametrize("job,error", [
    ("tests.jobs.run.NoAuthorJob", CoreJobInvalid),
    (run.NoAuthorJob, CoreJobInvalid),
    ("tests.jobs.run.AbstractRunJob", CoreJobAbstract),
    (run.AbstractRunJob, CoreJobAbstract),
    ("tests.jobs.run.NoSuchJob", CoreJobNotFound),
    ("tests.jobs.nosuchmodule.RecordJob", CoreJobNotFound),
])
def test_errors_before_execution_raise(env, job, error):
    with pytest.raises(error):
        execute(job)
    assert run.SEEN == []
    assert_nothing_left(env)


def test_invalid_property_raises(env):
    with pytest.raises(CoreJobInvalid, match="attempts"):
        execute(run.RecordJob, attempts=0)
    with pytest.raises(CoreJobInvalid, match="schedule"):
        execute(run.RecordJob, schedule="* * * * *")
    assert run.SEEN == []
    assert_nothing_left(env)


class ProgressOnlyJob(CoreJob):
    """Reports progress, nothing else."""
    author = "test"

    def execute(self, **kwargs):
        self.progress(0.5, "half way", force=True)


def test_progress_without_a_database_does_not_fail_the_job(env):
    """Progress is best effort: a job whose database is away for a moment
    (here: the embedded server cannot be started again) completes."""
    from core4.error import CoreDatabaseUnreachable
    from core4.queue import lifecycle
    from core4.queue.launcher.runner import execute_claimed
    queue = CoreQueue()
    job = queue.enqueue("tests.test_execute.ProgressOnlyJob")
    doc = lifecycle.claim_by_id(queue, job._id, "w@h")

    def unreachable():
        raise CoreDatabaseUnreachable("cannot start the embedded server")
    assert execute_claimed(doc, unreachable)["state"] == "complete"
