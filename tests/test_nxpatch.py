"""The gaps of NX-27017 that core4 fixes inside the server it starts
(:mod:`core4.mongo.nxpatch`).

``test_nx_gap_*`` run against a *plain* NX server (its own command line,
without core4's fixes) and assert the WRONG behaviour: when one of them
fails, a new NX release fixed the gap and its fix in nxpatch can go.
``test_fixed_*`` run the same against the session's server, which core4
started (``core4.mongo.embedded``), and assert MongoDB's behaviour.
"""

import datetime
import os
import subprocess
import sys
import threading

import pymongo
import pytest

from tests.conftest import free_port, wait_for_ping

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
CLAIMABLE_OR = [{"$match": {"$or": [
    {"operationType": "insert", "fullDocument.state": "pending"},
    {"operationType": "update", "fullDocument.state": "pending"}]}}]


@pytest.fixture(scope="module")
def plain_nx(tmp_path_factory):
    """An NX-27017 server started by its own command line (no fixes)."""
    data = str(tmp_path_factory.mktemp("plain-nx"))
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "nx-27017")
    with open(os.path.join(data, "out"), "wb") as out:
        proc = subprocess.Popen(
            [exe, "--data-dir", data, "--host", "127.0.0.1", "-p",
             str(port), "--pid-file", os.path.join(data, "nx.pid"),
             "--log-file", os.path.join(data, "nx.log")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = "mongodb://127.0.0.1:%d/" % port
    try:
        wait_for_ping(url)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def plain(plain_nx, request):
    """A fresh collection on the plain server."""
    client = pymongo.MongoClient(plain_nx, tz_aware=True)
    coll = client.gaps[request.node.name.replace("[", "_").strip("]")]
    coll.drop()
    yield coll
    client.close()


@pytest.fixture
def fixed(core4_env):
    """A fresh collection on the server core4 started."""
    client = core4_env.client()
    yield client[core4_env.database].fixed
    client.close()


def set_times(coll):
    coll.insert_one({"_id": 1, "state": "pending"})
    coll.update_one({"_id": 1}, {"$set": {"query_at": WHEN,
                                          "locked.heartbeat": WHEN}})
    return coll.find_one({"_id": 1})


def test_nx_gap_set_datetime_stored_as_string(plain):
    doc = set_times(plain)
    assert isinstance(doc["query_at"], str)
    assert isinstance(doc["locked"]["heartbeat"], str)
    assert plain.find_one({"query_at": {"$type": "date"}}) is None


def test_fixed_set_datetime(fixed):
    doc = set_times(fixed)
    assert doc["query_at"] == WHEN and doc["locked"]["heartbeat"] == WHEN
    assert fixed.find_one({"query_at": {"$lte": WHEN}})["_id"] == 1
    fixed.update_one({"_id": 1}, {"$min": {"first": WHEN}, "$inc": {"n": 1}})
    assert fixed.find_one({"_id": 1})["first"] == WHEN


def compare_half_second(coll):
    """Which of $lte/$gt of "half a second before the stored time" match
    (MongoDB: not $lte, but $gt)."""
    coll.insert_one({"_id": 1, "at": WHEN})
    before = WHEN - datetime.timedelta(milliseconds=500)
    return (coll.find_one({"at": {"$lte": before}}) is not None,
            coll.find_one({"at": {"$gt": before}}) is not None)


def test_nx_gap_datetime_compare_drops_fraction(plain):
    assert compare_half_second(plain) == (True, False)


def test_fixed_datetime_compare_milliseconds(fixed):
    assert compare_half_second(fixed) == (False, True)


def events_with_or(coll):
    """The events a change stream with an ``$or`` match delivers for an
    insert and an update of a pending job."""
    coll.insert_one({"_id": 0})
    seen = []
    with coll.watch(CLAIMABLE_OR, max_await_time_ms=200) as stream:
        def write():
            coll.insert_one({"_id": "a", "state": "pending"})
            coll.update_one({"_id": "a"}, {"$set": {"x": 1}})
            coll.insert_one({"_id": "b", "state": "running"})
            coll.insert_one({"_id": "c", "state": "last"})
        threading.Thread(target=write).start()
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=20)
        while datetime.datetime.now() < deadline:
            event = stream.try_next()
            if event is not None:
                seen.append((event["operationType"],
                             event["documentKey"]["_id"]))
            # the last insert does not match: once all four are written
            # and one more await passed, every matching event has come
            if coll.find_one({"_id": "c"}) is not None and event is None:
                break
    return seen


def test_nx_gap_change_stream_or_matches_nothing(plain):
    assert events_with_or(plain) == []


def test_fixed_change_stream_or(fixed):
    assert events_with_or(fixed) == [("insert", "a"), ("update", "a")]


PROJECTIONS = [{"a": 1}, {"a": True, "_id": 0}, {"n.x": 1, "missing": 1},
               {"a": 0}, {"_id": 0}, {"b": "$a"}, {"n": 1, "a": 1}]


def projected(coll):
    """What ``find`` answers for each of :data:`PROJECTIONS`, and what a
    ``find_one_and_update`` with a projection returns as the document
    before a nested ``$set``."""
    coll.drop()
    coll.insert_many([{"_id": 1, "a": "x", "n": {"x": 1, "y": [1, 2]}},
                      {"_id": 2, "n": {"x": 2}}, {"_id": 3, "a": None}])
    found = [list(coll.find({}, projection).sort("_id", 1))
             for projection in PROJECTIONS]
    before = coll.find_one_and_update(
        {"_id": 1}, {"$set": {"n.x": 5}}, projection={"n": 1},
        return_document=pymongo.ReturnDocument.BEFORE)
    return found, before


def test_fixed_projection_answers_as_plain_nx(plain, fixed):
    # (nxpatch builds inclusion projections without neosqlite's deep copy)
    found, before = projected(fixed)
    assert (found, before) == projected(plain)
    assert found[0] == [{"_id": 1, "a": "x"}, {"_id": 2}, {"_id": 3,
                                                            "a": None}]
    assert before == {"_id": 1, "n": {"x": 1, "y": [1, 2]}}
