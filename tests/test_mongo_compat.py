"""The NX-27017 gaps core4 codes around, and core4's workarounds.

For each gap there are two tests:

* ``test_nx_gap_*`` (``core4_env``, NX only, plain pymongo) asserts the WRONG
  behaviour of NX-27017. When one of them fails, NX fixed the gap and the
  workaround in ``core4/mongo/compat.py`` can go. (The gaps that core4
  fixes inside the server it starts are in ``tests/test_nxpatch.py``.)
* ``test_portable_*`` (``fidelity_env``) shows that core4's workaround gives
  the right answer on every backend (NX, SecantusDB, a real MongoDB).

Also: the one-line error for an unreachable server, and that a configured
``mongo_url`` never starts the embedded server.
"""

import datetime
import os
import re
import time

import pymongo
import pymongo.errors
import pytest
from bson import ObjectId

from core4.config import get_config, reset_config
from core4.error import CoreDatabaseUnreachable
from core4.mongo import (SystemCollections, count, count_by, ensure_index,
                         find_index, id_in,
                         now, to_datetime, from_datetime)
from core4.queue.queue import CoreQueue

UTC = datetime.timezone.utc


def ids(cursor):
    return sorted(doc["_id"] for doc in cursor)


# datetimes -------------------------------------------------------------------

def test_nx_gap_set_float_rounded(core4_env):
    """Not in shared/README.md: ``$set`` of a float keeps only 15
    significant digits (an inserted float keeps all), i.e. ~10 microseconds
    of an epoch time. Harmless while core4 never compares a stored time for
    equality with the value it wrote. When this fails NX fixed the gap."""
    coll = core4_env.db().times
    value = 1795453745.1601124
    coll.insert_one({"_id": 1, "inserted": value})
    coll.update_one({"_id": 1}, {"$set": {"updated": value}})
    doc = coll.find_one({"_id": 1})
    assert doc["inserted"] == value
    assert doc["updated"] != value
    assert doc["updated"] == pytest.approx(value, abs=1e-4)


def test_portable_datetimes(fidelity_env):
    """Times are BSON datetimes on every backend: ``$set`` at the top level
    and dotted, ``$min``, ``find_one_and_update``; read back equal and
    tz-aware; compared at millisecond precision."""
    coll = fidelity_env.client()[fidelity_env.database].times
    coll.insert_one({"_id": 1})
    at = now()
    assert at.tzinfo is not None and at.microsecond % 1000 == 0
    assert abs((at - datetime.datetime.now(UTC)).total_seconds()) < 5
    coll.update_one({"_id": 1}, {"$set": {"query_at": at,
                                          "locked.heartbeat": at},
                                 "$min": {"first": at}})
    doc = coll.find_one({"_id": 1})
    assert doc["query_at"] == at and doc["locked"]["heartbeat"] == at
    assert doc["first"] == at
    assert ids(coll.find({"query_at": {"$lte": at}})) == [1]
    assert ids(coll.find({"locked.heartbeat": {"$lte": at}})) == [1]
    half = datetime.timedelta(milliseconds=500)
    assert ids(coll.find({"query_at": {"$lte": at - half}})) == []
    assert ids(coll.find({"query_at": {"$gt": at - half}})) == [1]
    assert ids(coll.find({"query_at": {"$gt": at}})) == []
    after = coll.find_one_and_update(
        {"_id": 1}, {"$set": {"started_at": at + half}},
        return_document=pymongo.ReturnDocument.AFTER)
    assert after["started_at"] == at + half
    # conversions: naive means UTC; legacy epoch floats are read as UTC
    naive = datetime.datetime(2020, 1, 2, 3, 4, 5, 123456)
    assert from_datetime(naive) == datetime.datetime(
        2020, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert from_datetime(datetime.datetime(2020, 1, 2, 4, 4, 5, tzinfo=cet)) \
        == datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert to_datetime(1577934245) == datetime.datetime(
        2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert to_datetime(None) is None and from_datetime(None) is None


def test_nx_gap_aggregate_match_datetime(core4_env):
    """An aggregation's ``$match`` compares datetimes wrongly on NX (even
    in a server core4 started): ``$lt`` matches nothing. When this fails NX
    fixed the gap and count()/count_by() need no ``find`` for datetimes."""
    coll = core4_env.db().times
    base = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    coll.insert_many([{"_id": i, "t": base + datetime.timedelta(seconds=i)}
                      for i in range(4)])
    cut = base + datetime.timedelta(seconds=1.5)
    counted = list(coll.aggregate([{"$match": {"t": {"$lt": cut}}},
                                   {"$count": "n"}]))
    assert counted in ([], [{"n": 0}])
    assert coll.count_documents({"t": {"$lt": cut}}) == 2


def test_portable_counts_with_datetimes(fidelity_env):
    coll = fidelity_env.db().times
    base = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    coll.insert_many([{"_id": i, "t": base + datetime.timedelta(seconds=i),
                       "s": "ab"[i % 2]} for i in range(6)])
    cut = base + datetime.timedelta(seconds=2.5)
    assert count(coll, {"t": {"$lt": cut}}) == 3
    assert count(coll, {"t": {"$gte": cut}}) == 3
    assert count(coll, {"s": "a"}) == 3
    assert count_by(coll, ["s"], {"t": {"$lt": cut}}) == {("a",): 2,
                                                         ("b",): 1}


# ObjectId equality -----------------------------------------------------------

def test_nx_gap_objectid_equality_on_other_field(core4_env):
    """When this fails NX fixed the gap: the workaround in
    core4/mongo/compat.py (``id_in``) can go."""
    coll = core4_env.db().refs
    ref, me = ObjectId(), ObjectId()
    coll.insert_one({"_id": me, "ref": ref, "enqueued": {"parent_id": ref}})
    assert coll.find_one({"ref": ref}) is None
    assert coll.find_one({"enqueued.parent_id": ref}) is None
    # and a string matches an ObjectId _id
    assert coll.find_one({"_id": str(me)}) is not None


def test_nx_gap_count_documents_with_objectid(core4_env):
    """Not in shared/README.md: ``count_documents`` (an aggregation) counts
    0 for any ObjectId filter, even ``$in`` and ``_id``. core4 never uses
    count_documents; when this fails NX fixed the gap."""
    coll = core4_env.db().refs
    ref, me = ObjectId(), ObjectId()
    coll.insert_one({"_id": me, "ref": ref})
    assert coll.find_one({"_id": me}) is not None
    assert coll.count_documents({"_id": me}) == 0
    assert coll.count_documents({"ref": {"$in": [ref]}}) == 0


def test_portable_id_in(fidelity_env):
    coll = fidelity_env.db().refs
    ref, other = ObjectId(), ObjectId()
    coll.insert_many([{"_id": 1, "ref": ref, "enqueued": {"parent_id": ref}},
                      {"_id": 2, "ref": other}])
    assert ids(coll.find({"ref": id_in(ref)})) == [1]
    assert ids(coll.find({"ref": id_in(str(ref))})) == [1]
    assert ids(coll.find({"ref": id_in(ref, str(other))})) == [1, 2]
    assert ids(coll.find({"enqueued.parent_id": id_in(ref)})) == [1]
    assert ids(coll.find({"ref": id_in(ObjectId())})) == []


def test_portable_count_with_objectids(fidelity_env):
    from core4.mongo import count
    coll = fidelity_env.db().refs
    mine = [ObjectId() for _ in range(3)]
    coll.insert_many([{"_id": _id, "s": "x"} for _id in mine]
                     + [{"_id": ObjectId(), "s": "x"}])
    assert count(coll, {"_id": {"$in": mine}}) == 3
    assert count(coll, {"_id": mine[0], "s": "x"}) == 1
    assert count(coll, {"s": "x"}) == 4


# null and missing ------------------------------------------------------------

def test_nx_gap_null_and_missing_mixed_up(core4_env):
    """When this fails NX fixed the gap: the workaround in
    core4/mongo/compat.py (never filter on None: ``$unset`` and
    ``$exists``) can go."""
    coll = core4_env.db().nulls
    coll.insert_many([{"_id": 1, "v": None}, {"_id": 2}, {"_id": 3, "v": 5}])
    # MongoDB: [2] and [1, 3] and [3]
    assert ids(coll.find({"v": {"$exists": False}})) == [1, 2]
    assert ids(coll.find({"v": {"$exists": True}})) == [3]
    assert ids(coll.find({"v": {"$ne": None}})) == [2, 3]


def test_portable_unset_and_exists(fidelity_env):
    coll = fidelity_env.db().nulls
    coll.insert_many([{"_id": 1, "killed_at": 1.5}, {"_id": 2},
                      {"_id": 3, "killed_at": 2.5}])
    coll.update_one({"_id": 3}, {"$unset": {"killed_at": ""}})
    assert "killed_at" not in coll.find_one({"_id": 3})
    assert ids(coll.find({"killed_at": {"$exists": False}})) == [2, 3]
    assert ids(coll.find({"killed_at": {"$exists": True}})) == [1]
    # the conditional update core4 uses to request a kill only once
    cond = {"_id": 1, "killed_at": {"$exists": False}}
    assert coll.update_one(cond, {"$set": {"killed_at": 9.0}}) \
        .modified_count == 0
    cond["_id"] = 2
    assert coll.update_one(cond, {"$set": {"killed_at": 9.0}}) \
        .modified_count == 1


# booleans --------------------------------------------------------------------

def test_nx_gap_set_true_returns_one(core4_env):
    """When this fails NX fixed the gap: the workaround in
    core4/mongo/compat.py (read booleans with ``bool()``) can go."""
    coll = core4_env.db().bools
    coll.insert_one({"_id": 1, "force": False})
    coll.update_one({"_id": 1}, {"$set": {"force": True, "a.b": True}})
    doc = coll.find_one({"_id": 1})
    assert doc["force"] == 1 and type(doc["force"]) is int
    assert type(doc["a"]["b"]) is int


def test_portable_booleans(fidelity_env):
    queue = CoreQueue()
    # the first pause creates the document, the second $sets an existing one
    queue.pause()
    queue.resume()
    queue.pause()
    assert queue.maintenance()["global"] is True
    queue.resume()
    assert queue.maintenance()["global"] is False
    job = queue.enqueue("core4.queue.helper.job.example.DummyJob",
                        force=False, sleep=1)
    queue.sys.queue.update_one({"_id": job._id}, {"$set": {"force": True}})
    assert queue.detail(job._id)["force"] is True


# indexes ---------------------------------------------------------------------

def test_nx_gap_index_renamed_and_direction_lost(core4_env):
    """When this fails NX fixed the gap: the workaround in
    core4/mongo/compat.py (``find_index``/``ensure_index`` by key) can go."""
    coll = core4_env.db().idx
    name = coll.create_index([("a", 1), ("b", -1)])
    assert name == "a_1_b_-1"
    info = coll.index_information()
    assert name not in info
    keys = [spec["key"] for spec in info.values()]
    assert [("a", 1), ("b", 1)] in keys
    with pytest.raises(pymongo.errors.OperationFailure):
        coll.drop_index(name)


def test_portable_ensure_and_find_index(fidelity_env):
    coll = fidelity_env.db().idx
    keys = [("name", 1), ("_hash", -1)]
    assert find_index(coll, keys) is None
    ensure_index(coll, keys, unique=True)
    ensure_index(coll, keys, unique=True)
    name = find_index(coll, keys)
    assert name is not None
    info = coll.index_information()
    assert info[name].get("unique") is True
    assert [k for k, _ in info[name]["key"]] == ["name", "_hash"]
    assert sum(1 for spec in info.values()
               if [k for k, _ in spec["key"]] == ["name", "_hash"]) == 1
    assert find_index(coll, [("_hash", 1), ("name", 1)]) is None
    assert find_index(coll, "name") is None
    coll.insert_one({"name": "x", "_hash": "h"})
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        coll.insert_one({"name": "x", "_hash": "h"})
    coll.drop_index(name)
    assert find_index(coll, keys) is None


# collection names ------------------------------------------------------------

def test_nx_gap_dotted_collection_name_refused(core4_env):
    """When this fails NX accepts dots in collection names: core4 could use
    upstream's ``sys.queue`` names again (see core4/core4.yaml ``sys``)."""
    with pytest.raises(pymongo.errors.OperationFailure):
        core4_env.db()["sys.queue"].insert_one({"x": 1})


def test_portable_system_collection_names(fidelity_env):
    config = get_config()
    system = SystemCollections(config)
    names = {}
    for key in config.sys:
        if key in config.DEFAULT:
            continue  # the DEFAULT values every section inherits
        names[key] = getattr(system, key).name
        assert re.fullmatch(r"[A-Za-z0-9_]+", names[key]), names[key]
    assert set(names) == {"queue", "journal", "worker", "stdout", "log",
                          "event", "job", "role", "cookie", "schedule",
                          "secret", "parallel"}
    for key in ("queue", "journal", "worker", "stdout"):
        assert names[key] == "sys_" + key
        coll = getattr(system, key)
        coll.insert_one({"_id": "probe"})
        assert coll.database.name == fidelity_env.database
        assert fidelity_env.db()["sys_" + key].find_one(
            {"_id": "probe"}) is not None


# $not ------------------------------------------------------------------------

def test_nx_gap_not_operator_missing(core4_env):
    """When this fails NX implements ``$not``: queries may use it again
    (core4 uses ``$ne``/``$nin`` instead)."""
    coll = core4_env.db().ops
    coll.insert_many([{"_id": 1, "v": 1}, {"_id": 2, "v": 5}])
    with pytest.raises(pymongo.errors.OperationFailure, match=r"\$not"):
        list(coll.find({"v": {"$not": {"$gt": 2}}}))


def test_portable_ne_and_nin(fidelity_env):
    coll = fidelity_env.db().ops
    coll.insert_many([{"_id": 1, "state": "pending"},
                      {"_id": 2, "state": "running"},
                      {"_id": 3, "state": "killed"}])
    assert ids(coll.find({"state": {"$ne": "running"}})) == [1, 3]
    assert ids(coll.find({"state": {"$nin": ["running", "killed"]}})) == [1]


# arrayFilters ----------------------------------------------------------------

def test_nx_gap_array_filters_ignored(core4_env):
    """When this fails NX applies arrayFilters; core4 does not use them
    (it updates array elements with the positional ``$`` operator)."""
    coll = core4_env.db().arrays
    coll.insert_one({"_id": 1, "xs": [{"k": 1, "v": 0}, {"k": 2, "v": 0}]})
    result = coll.update_one({"_id": 1}, {"$set": {"xs.$[e].v": 9}},
                             array_filters=[{"e.k": 2}])
    assert result.modified_count == 0
    assert coll.find_one({"_id": 1})["xs"] == [{"k": 1, "v": 0},
                                               {"k": 2, "v": 0}]


def test_portable_positional_update(fidelity_env):
    coll = fidelity_env.db().arrays
    coll.insert_one({"_id": 1, "xs": [{"k": 1, "v": 0}, {"k": 2, "v": 0}]})
    coll.update_one({"_id": 1, "xs.k": 2}, {"$set": {"xs.$.v": 9}})
    assert coll.find_one({"_id": 1})["xs"] == [{"k": 1, "v": 0},
                                               {"k": 2, "v": 9}]


# connection ------------------------------------------------------------------

def test_unreachable_server_one_line_error(core4_env, monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url",
                       "mongodb://127.0.0.1:1/")
    monkeypatch.setenv("CORE4_OPTION_mongo__server_timeout", "!!int 300")
    reset_config()
    config = get_config()
    assert config.mongo.server_timeout == 300
    started = time.monotonic()
    with pytest.raises(CoreDatabaseUnreachable) as info:
        SystemCollections(config).ping()
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert "127.0.0.1:1" in message
    # a configured url never falls back to the embedded server
    assert not os.path.exists(os.path.join(core4_env.home, "mongo"))


def test_configured_url_starts_no_embedded_server(core4_env):
    config = get_config()
    assert config.DEFAULT.mongo_url == core4_env.url
    system = SystemCollections(config)
    system.ping()
    assert core4_env.url in system.describe()
    CoreQueue(config).enqueue("core4.queue.helper.job.example.DummyJob",
                              sleep=1)
    assert core4_env.db().sys_queue.find_one({}) is not None
    assert not os.path.exists(os.path.join(core4_env.home, "mongo"))


# indexes naming _id, $addToSet on a missing array ---------------------------

def test_nx_gap_index_with_id_breaks_inserts(core4_env):
    """When this fails NX fixed the gap: the claim index in
    core4/queue/queue.py may then end with ``_id``."""
    coll = core4_env.db().gap_id_index
    coll.create_index([("state", 1), ("_id", 1)])
    with pytest.raises(pymongo.errors.WriteError):
        coll.insert_one({"state": "b"})


def test_nx_gap_add_to_set_on_missing_array(core4_env):
    """When this fails NX fixed the gap: CoreQueue._ensure_maintenance can
    go."""
    coll = core4_env.db().gap_add_to_set
    coll.insert_one({"_id": 1})
    coll.update_one({"_id": 1}, {"$addToSet": {"projects": "a"}})
    assert "projects" not in coll.find_one({"_id": 1})


def test_portable_queue_indexes_allow_inserts(fidelity_env):
    queue = CoreQueue()
    queue.setup()
    first = queue.enqueue("core4.queue.helper.job.DummyJob", sleep=1)
    second = queue.enqueue("core4.queue.helper.job.DummyJob", sleep=2)
    assert queue.detail(first._id) and queue.detail(second._id)
    assert find_index(queue.sys.queue, [("name", 1), ("_hash", 1)])


def test_nx_gap_compound_group_id_not_evaluated(core4_env):
    coll = core4_env.db().grouped
    coll.insert_many([{"a": "x", "b": "y"}, {"a": "x", "b": "z"}])
    result = list(coll.aggregate([{"$group": {
        "_id": {"a": "$a", "b": "$b"}, "n": {"$sum": 1}}}]))
    # a real MongoDB gives two groups {a: x, b: y} and {a: x, b: z}
    assert result == [{"_id": {"a": "$a", "b": "$b"}, "n": 2}]


def test_portable_count_and_count_by(fidelity_env):
    from core4.mongo import count, count_by
    coll = fidelity_env.db().counted
    coll.insert_many([{"name": "a.b", "state": "pending"},
                      {"name": "a.b", "state": "pending"},
                      {"name": "a.b", "state": "running"},
                      {"name": "c.d", "state": "pending"},
                      {"name": "e.f"}])
    assert count(coll) == 5
    assert count(coll, {"state": "pending"}) == 3
    assert count(coll, {"state": "nothing"}) == 0
    assert count_by(coll, ["name", "state"]) == {
        ("a.b", "pending"): 2, ("a.b", "running"): 1,
        ("c.d", "pending"): 1, ("e.f", ""): 1}
    assert count_by(coll, ["state"], {"name": "a.b"}) == {
        ("pending",): 2, ("running",): 1}
