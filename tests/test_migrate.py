"""Databases written by core4 before 0.3 (times as epoch floats) are
migrated to BSON datetimes: idempotently, with nothing lost, on every
backend."""

import datetime

from bson import ObjectId

from core4.mongo import SystemCollections
from core4.queue import migrate
from core4.queue.queue import CoreQueue

UTC = datetime.timezone.utc
T0 = 1795453745.25     # 2026-11-23 ...
WAITING_AT = 253402300000.0


def legacy_job(**more):
    """A job document as core4 0.2 stored it."""
    _id = ObjectId()
    doc = {"_id": _id, "name": "core4.queue.helper.job.DummyJob",
           "args": {"sleep": 1}, "_hash": str(_id), "state": "failed", "attempts": 3,
           "attempts_left": 2, "trial": 1, "query_at": T0 + 600,
           "started_at": T0, "finished_at": T0 + 1.5, "runtime": 1.5,
           "first_started_at": T0, "error_time": 600,
           "enqueued": {"at": T0 - 10, "hostname": "h", "username": "u"},
           "prog": {"value": 0.5, "message": "half", "at": T0 + 1},
           "last_error": {"exception": "boom", "timestamp": T0 + 1.5,
                          "traceback": None}}
    doc.update(more)
    return doc


def as_datetime(epoch):
    return datetime.datetime.fromtimestamp(epoch, UTC)


def test_legacy_times_become_datetimes(fidelity_env):
    db = fidelity_env.db()
    queued = legacy_job()
    waiting = legacy_job(state="pending", query_at=WAITING_AT,
                         waiting_for=["x.y.Z"])
    journaled = legacy_job(state="complete")
    db.sys_queue.insert_many([queued, waiting])
    db.sys_journal.insert_one(journaled)
    db.sys_worker.insert_many([
        {"_id": "w@h", "kind": "worker", "heartbeat": T0, "started_at": T0,
         "phase": "exit"},
        {"_id": "__halt__", "at": T0}])

    CoreQueue().setup()   # any daemon or enqueue migrates on first use

    doc = db.sys_queue.find_one({"_id": queued["_id"]})
    assert doc["query_at"] == as_datetime(T0 + 600)
    assert doc["started_at"] == as_datetime(T0)
    assert doc["enqueued"]["at"] == as_datetime(T0 - 10)
    assert doc["prog"]["at"] == as_datetime(T0 + 1)
    assert doc["last_error"]["timestamp"] == as_datetime(T0 + 1.5)
    # durations and everything else are untouched
    assert doc["runtime"] == 1.5 and doc["error_time"] == 600
    rest = {k: v for k, v in doc.items() if k not in migrate.TIME_FIELDS}
    assert rest["enqueued"]["hostname"] == "h"
    assert rest["args"] == {"sleep": 1} and rest["attempts_left"] == 2
    assert rest["prog"]["message"] == "half"
    # a job waiting for its dependencies still waits (never due)
    wait = db.sys_queue.find_one({"_id": waiting["_id"]})
    assert wait["query_at"] >= datetime.datetime(9999, 1, 1, tzinfo=UTC)
    assert db.sys_journal.find_one({"_id": journaled["_id"]})[
        "finished_at"] == as_datetime(T0 + 1.5)
    worker = db.sys_worker.find_one({"_id": "w@h"})
    assert worker["heartbeat"] == as_datetime(T0)
    assert db.sys_worker.find_one({"_id": "__halt__"})["at"] == \
        as_datetime(T0)
    assert db.sys_worker.find_one({"_id": "__schema__"})["version"] == \
        migrate.SCHEMA
    # queries by datetime work on the migrated documents
    assert db.sys_queue.find_one(
        {"query_at": {"$lte": as_datetime(T0 + 600)}})["_id"] == \
        queued["_id"]


def test_migration_is_idempotent(fidelity_env):
    db = fidelity_env.db()
    db.sys_queue.insert_one(legacy_job())
    system = SystemCollections(CoreQueue().config)
    first = migrate.migrate(system)
    assert first == {"sys_queue": 1}
    before = list(db.sys_queue.find({}))
    assert migrate.migrate(system) == {}
    assert list(db.sys_queue.find({})) == before
    assert migrate.ensure_schema(system) == {}
