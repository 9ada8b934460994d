"""Tests of core4.logger: record fields, handler levels, sys.log (indexes,
TTL, the failed job's DEBUG records), writes that never block, drops and
fork safety. All against the session's real NX-27017 server."""

import datetime
import logging
import os
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # makes this module importable by its dotted name
    sys.path.insert(0, ROOT)

from core4.base import hostname, username  # noqa: E402
from core4.config import get_config, reset_config  # noqa: E402
from core4.logger import (flush_logging, get_logger,  # noqa: E402
                          job_records, mongo_handler, setup_logging)
from core4.mongo import SystemCollections, find_index  # noqa: E402
from core4.queue.job import CoreJob  # noqa: E402
from tests.conftest import free_port  # noqa: E402

QUAL = "tests.test_logging.Thing"


class DebugJob(CoreJob):
    """Logs DEBUG records, then fails if asked to."""
    author = "mra"

    def execute(self, fail=False):
        for step in range(3):
            self.logger.debug("debug step %d", step)
        self.logger.info("info of DebugJob")
        if fail:
            raise ValueError("DebugJob fails on purpose")


def configure(monkeypatch, console=True, **options):
    """Set logging options (``key=value`` of ``logging``) and set up."""
    for key, value in options.items():
        monkeypatch.setenv("CORE4_OPTION_" + key, value)
    reset_config()
    config = get_config()
    setup_logging(config, console=console)
    return config


@pytest.fixture
def env(core4_env):
    yield core4_env
    remove_handlers()


def remove_handlers():
    """Detach what setup_logging attached (other tests set up their own)."""
    root = logging.getLogger("core4")
    for handler in list(root.handlers):
        if getattr(handler, "_core4_handler", False):
            root.removeHandler(handler)
            handler.close()


def ours():
    """The handlers setup_logging attached (pytest adds its own)."""
    return [h if h is mongo_handler() else type(h).__name__
            for h in logging.getLogger("core4").handlers
            if getattr(h, "_core4_handler", False)]


def records(env, **query):
    return list(env.db().sys_log.find(query).sort([("created", 1),
                                                    ("_id", 1)]))


def test_records_carry_the_fields(env, monkeypatch):
    configure(monkeypatch, console=False)
    log = get_logger(QUAL, identifier="abc")
    before = datetime.datetime.now(datetime.timezone.utc)
    log.info("hello %s", "world")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.error("it failed", exc_info=True)
    get_logger("other.Name").warning("no identifier")
    assert flush_logging(5.0)
    docs = records(env)
    assert [d["message"] for d in docs] == ["hello world", "it failed",
                                           "no identifier"]
    first = docs[0]
    assert first["level"] == "INFO" and first["levelno"] == logging.INFO
    assert first["qual_name"] == QUAL
    assert first["project"] == "tests"
    assert first["identifier"] == "abc"
    assert first["hostname"] == hostname()
    assert first["username"] == username()
    created = first["created"].replace(tzinfo=datetime.timezone.utc)
    assert abs((created - before).total_seconds()) < 5
    assert "exception" not in first
    exc = docs[1]["exception"]
    assert exc["info"] == "ValueError('bad value')"
    assert exc["text"][0].startswith("Traceback")
    assert exc["text"][-1] == "ValueError: bad value"
    assert docs[2]["identifier"] == "" and docs[2]["project"] == "other"


def test_each_handler_honours_its_level(env, monkeypatch, capsys):
    configure(monkeypatch, logging__stderr="WARNING", logging__stdout="INFO",
              logging__mongodb="ERROR")
    log = get_logger(QUAL, identifier="lv")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING,
                  logging.ERROR):
        log.log(level, "message at %s", logging.getLevelName(level))
    assert flush_logging(5.0)
    out, err = capsys.readouterr()
    assert "at DEBUG" not in out and "at INFO" in out and "at ERROR" in out
    assert "at INFO" not in err and "at WARNING" in err and "at ERROR" in err
    assert "[%s/lv] message at ERROR" % QUAL in err  # the configured format
    assert [d["message"] for d in records(env)] == ["message at ERROR"]


def test_console_false_and_idempotent(env, monkeypatch, capsys):
    config = configure(monkeypatch)
    first = mongo_handler()
    setup_logging(config)
    setup_logging(config)
    assert mongo_handler() is first  # same settings: same writer
    assert ours() == [first, "ConsoleHandler"]  # sys.log and stderr (INFO)
    get_logger(QUAL).info("once")
    assert capsys.readouterr().err.count("once") == 1
    setup_logging(config, console=False)
    assert ours() == [first]
    get_logger(QUAL).warning("only in sys.log")
    assert flush_logging(5.0)
    assert capsys.readouterr().err == ""
    assert [d["message"] for d in records(env)] == ["once", "only in sys.log"]


def test_indexes_and_ttl(env, monkeypatch):
    configure(monkeypatch, console=False, logging__mongodb_ttl="!!int 1234")
    get_logger(QUAL).info("make the collection")
    assert flush_logging(5.0)
    log = SystemCollections(get_config()).log
    for key in ("created", "identifier", "qual_name", "levelno"):
        assert find_index(log, key), key
    info = log.index_information()
    assert info[find_index(log, "created")]["expireAfterSeconds"] == 1234
    assert not any("_id" in dict(i["key"]) for n, i in info.items()
                   if n != find_index(log, "_id"))


def test_failed_job_writes_its_debug_records(env, monkeypatch):
    from core4.queue.helper.functool import execute
    configure(monkeypatch, console=False)  # mongodb: INFO
    ok = execute(DebugJob)
    failed = execute(DebugJob, fail=True)
    assert ok["state"] == "complete" and failed["state"] == "error"
    assert flush_logging(5.0)
    system = SystemCollections(get_config())
    ok_docs = job_records(system, ok["_id"])
    assert [d["message"] for d in ok_docs] == [
        "start execution", "info of DebugJob",
        "done execution with [complete]"]
    failed_docs = job_records(system, failed["_id"])
    assert [d["message"] for d in failed_docs] == [
        "start execution", "debug step 0", "debug step 1", "debug step 2",
        "info of DebugJob", "done execution with [error]"]
    assert [d["level"] for d in failed_docs[1:4]] == ["DEBUG"] * 3
    last = failed_docs[-1]
    assert last["level"] == "CRITICAL"
    assert last["exception"]["text"][-1] == \
        "ValueError: DebugJob fails on purpose"
    assert all(d["identifier"] == str(failed["_id"]) for d in failed_docs)


def test_debug_buffer_is_bounded(env, monkeypatch):
    configure(monkeypatch, console=False,
              logging__exception__capacity="!!int 5")
    log = get_logger(QUAL, identifier="job1")
    for step in range(20):
        log.debug("step %d", step)
    log.critical("failed")
    assert flush_logging(5.0)
    assert [d["message"] for d in records(env)] == [
        "step 15", "step 16", "step 17", "step 18", "step 19", "failed"]


def test_mongodb_debug_writes_everything_at_once(env, monkeypatch):
    configure(monkeypatch, console=False, logging__mongodb="DEBUG")
    get_logger(QUAL, identifier="j").debug("debug now")
    assert flush_logging(5.0)
    assert [d["message"] for d in records(env)] == ["debug now"]


def dead_database(monkeypatch, **options):
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url",
                       "mongodb://127.0.0.1:%d/" % free_port())
    monkeypatch.setenv("CORE4_OPTION_mongo__server_timeout", "!!int 200")
    monkeypatch.setenv("CORE4_OPTION_mongo__connect_timeout", "!!int 200")
    return configure(monkeypatch, console=False, **options)


def test_unreachable_database_never_blocks(env, monkeypatch):
    dead_database(monkeypatch)
    log = get_logger(QUAL, identifier="down")
    started = time.monotonic()
    for number in range(1000):
        log.info("record %d", number)
    try:
        raise KeyError("x")
    except KeyError:
        log.critical("with traceback", exc_info=True)
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert flush_logging(0.5) is False
    assert time.monotonic() - started < 1.0


def test_full_queue_drops_and_counts(env, monkeypatch):
    dead_database(monkeypatch, logging__mongodb_queue="!!int 10")
    log = get_logger(QUAL)
    for number in range(100):
        log.warning("record %d", number)
    handler = mongo_handler()
    # only the queue (10) and the writer's one batch hold records
    assert handler.dropped >= 50
    assert handler.stats()["dropped"] == handler.dropped


def test_drops_are_reported_in_sys_log(env, monkeypatch):
    configure(monkeypatch, console=False, logging__mongodb_queue="!!int 10")
    log = get_logger(QUAL)
    for number in range(500):
        log.warning("record %d", number)
    dropped = mongo_handler().dropped
    assert dropped > 0
    assert flush_logging(5.0)
    log.warning("after the drops")  # the notice goes with the next write
    assert flush_logging(5.0)
    notices = records(env, message={"$regex": "dropped"})
    assert sum(int(d["message"].split()[0]) for d in notices) == dropped
    assert len(records(env)) == 500 - dropped + 1 + len(notices)


def test_forked_child_logs_with_its_own_writer(env, monkeypatch):
    config = configure(monkeypatch, console=False)
    log = get_logger(QUAL, identifier="parent")
    log.info("parent before fork")  # the parent's writer thread runs
    parent_handler = mongo_handler()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            get_logger(QUAL, identifier="child").info("child inherited")
            ok = flush_logging(10.0)
            setup_logging(config, console=False)
            mine = mongo_handler()
            get_logger(QUAL, identifier="child").info("child own setup")
            ok = flush_logging(10.0) and ok
            code = 0 if ok and mine is not parent_handler else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.info("parent after fork")
    assert flush_logging(5.0)
    assert mongo_handler() is parent_handler
    messages = [d["message"] for d in records(env)]
    assert sorted(messages) == sorted([
        "parent before fork", "child inherited", "child own setup",
        "parent after fork"])
    assert len(records(env, identifier="child")) == 2


def test_a_job_log_file_is_made_at_the_first_record_or_named_lost(
        tmp_path, capsys):
    """A job process's records go to its log file (for its worker to
    forward): no record, no file; a file that cannot be made costs the
    records and one line on stderr, never the job."""
    from core4.logger.forward import FileHandler
    unused = FileHandler(str(tmp_path / "unused.log"))
    unused.close()
    assert not (tmp_path / "unused.log").exists()

    used = FileHandler(str(tmp_path / "used.log"))
    used._put({"message": "one"})
    used.close()
    assert "one" in (tmp_path / "used.log").read_text()

    lost = FileHandler(str(tmp_path / "missing" / "lost.log"))
    for _ in range(3):
        lost._put({"message": "gone"})
    assert lost.dropped == 3
    err = capsys.readouterr().err
    assert err.count("core4: the job's log records are lost") == 1
