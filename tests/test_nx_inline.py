"""Short requests on NX's event loop (:mod:`core4.mongo.nxpatch`, fix 7).

A request NX answers from its ``_id`` index runs on the server's event loop
when its database's lock is free; every other request, and a short one
whose database is busy, runs on the request pool, so the loop never waits.

The server here runs in a process of the test's own (the script below),
with core4's fixes applied as core4 applies them, so that the test can
hold a database's lock and see on which thread each request ran.
"""

import subprocess
import sys
import threading
import time

import pymongo
import pytest

from core4.mongo.nxpatch import SHORT_MAX, WaitedLock, is_short_request
from tests.conftest import free_port, wait_for_ping

SERVER = r"""
import asyncio, sys, threading
import core4.mongo.nxpatch
core4.mongo.nxpatch.apply()
from nx_27017.handler import NeoSQLiteHandler
from nx_27017.server import run_server

data, port = sys.argv[1], int(sys.argv[2])
handler = NeoSQLiteHandler(data, data_dir=data)
ran = []  # (collection, thread name) of each command


class Spy:
    # the lock of database "held": says when a thread waits for it
    def __init__(self):
        self.lock = threading.RLock()

    def acquire(self, blocking=True, timeout=-1):
        if self.lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        print("waiting on", threading.current_thread().name, flush=True)
        return self.lock.acquire()

    def release(self):
        self.lock.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


handler._locks["held"] = Spy()
command = type(handler).handle_command


def recorded(self, msg):
    body = next(doc for kind, doc in msg["sections"] if kind == "body")
    name = next(iter(body))
    ran.append((body[name], threading.current_thread().name))
    return command(self, msg)


type(handler).handle_command = recorded
threading.Thread(target=asyncio.run, daemon=True, name="loop",
                 args=(run_server("127.0.0.1", port, handler),)).start()
for line in sys.stdin:
    word = line.split()[0]
    if word == "hold":
        handler._locks["held"].acquire()
    elif word == "release":
        handler._locks["held"].release()
    elif word == "ran":
        print(" ".join("%s=%s" % pair for pair in ran
                       if isinstance(pair[0], str)), flush=True)
        continue
    print(word, "done", flush=True)
"""


@pytest.fixture
def server(tmp_path):
    """An NX server with core4's fixes in a process the test talks to:
    yields (client, ask) where ``ask(word)`` returns the server's answer."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path), str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(word):
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    url = "mongodb://127.0.0.1:%d/" % port
    client = None
    try:
        wait_for_ping(url)
        client = pymongo.MongoClient(url, socketTimeoutMS=60000)
        yield client, ask, proc
    finally:
        if client is not None:
            client.close()
        proc.kill()
        proc.wait(30)


def test_short_requests_run_on_the_loop_others_on_the_pool(server):
    client, ask, _ = server
    coll = client.free.jobs
    coll.insert_many([{"_id": i, "n": i} for i in range(3)])
    client.free.command("find", "by_id", filter={"_id": 1})
    client.free.command("find", "by_n", filter={"n": 1})
    client.free.command("find", "by_range", filter={"_id": {"$gt": 0}})
    ran = dict(pair.split("=") for pair in ask("ran").split())
    assert ran["by_id"] == "loop"
    assert ran["by_n"].startswith("nx-request")
    assert ran["by_range"].startswith("nx-request")


def test_a_busy_database_never_holds_up_the_loop(server):
    client, ask, proc = server
    coll = client.held.jobs
    coll.insert_one({"_id": 1, "n": 0})
    assert ask("hold") == "hold done"
    result = {}

    def increment():
        result["doc"] = coll.find_one_and_update(
            {"_id": 1}, {"$inc": {"n": 1}},
            return_document=pymongo.ReturnDocument.AFTER)

    thread = threading.Thread(target=increment)
    thread.start()
    # the short request waits for the held lock on a thread of the pool...
    assert proc.stdout.readline().startswith("waiting on nx-request")
    # ...while the loop answers the other databases, short request or not
    client.admin.command("ping")
    assert client.free.jobs.find_one({"_id": 7}) is None
    assert client.free.jobs.count_documents({"n": 1}) == 0
    assert "doc" not in result
    assert ask("release") == "release done"
    thread.join(60)
    assert result["doc"] == {"_id": 1, "n": 1}


def test_a_database_lock_counts_its_waiters():
    # the loop takes a database's lock only when no request of the pool
    # waits for it: it must know that one does
    lock = WaitedLock()
    assert lock.acquire() and lock.acquire(blocking=False)  # re-entrant
    lock.release()
    got = threading.Event()

    def wait():
        with lock:
            got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    deadline = time.monotonic() + 60
    while lock.waiting != 1:
        assert time.monotonic() < deadline, "the waiter was not counted"
        time.sleep(0.01)
    assert not got.is_set()
    lock.release()
    thread.join(60)
    assert got.is_set() and lock.waiting == 0
    assert lock.acquire(blocking=False)


def body_msg(body, **payload):
    """An OP_MSG as NX parses it: the body and payload sections."""
    sections = [("body", body)]
    sections += [("payload", {key: value}) for key, value in payload.items()]
    return {"request_id": 1, "sections": sections}


@pytest.mark.parametrize("msg", [
    body_msg({"ping": 1, "$db": "admin"}),
    body_msg({"find": "c", "filter": {"_id": 5}, "$db": "d"}),
    body_msg({"find": "c", "filter": {"_id": {"$in": [1, 2]}, "s": "x"}}),
    body_msg({"findAndModify": "c", "query": {"_id": 5, "state": "p"},
              "update": {"$set": {"s": 1}}}),
    body_msg({"update": "c"}, updates=[{"q": {"_id": i}, "u": {}}
                                       for i in range(SHORT_MAX)]),
    body_msg({"delete": "c", "deletes": [{"q": {"_id": 1}, "limit": 1}]}),
    body_msg({"insert": "c"}, documents=[{"a": 1}] * SHORT_MAX),
    body_msg({"update": "c"}, updates=[{"q": {
        "_id": 1, "state": "running", "locked.token": "t",
        "query_at": {"$lte": 5}, "killed_at": {"$exists": False}},
        "u": {"$set": {"state": "complete"}}}]),
])
def test_short_requests(msg):
    assert is_short_request(msg)


@pytest.mark.parametrize("msg", [
    body_msg({"find": "c", "filter": {"state": "pending"}}),
    body_msg({"find": "c", "filter": {"_id": {"$gte": 5}}}),
    body_msg({"find": "c", "filter": {"_id": {"$in": list(range(
        SHORT_MAX + 1))}}}),
    body_msg({"findAndModify": "c", "query": {"state": "p"},
              "update": {"$set": {"s": 1}}}),
    body_msg({"update": "c"}, updates=[{"q": {"_id": 1}, "u": {}},
                                       {"q": {"n": 1}, "u": {}}]),
    body_msg({"update": "c"}, updates=[{"q": {"_id": i}, "u": {}}
                                       for i in range(SHORT_MAX + 1)]),
    body_msg({"insert": "c"}, documents=[{"a": 1}] * (SHORT_MAX + 1)),
    body_msg({"getMore": 7, "collection": "c", "maxTimeMS": 1000}),
    body_msg({"aggregate": "c", "pipeline": [], "cursor": {}}),
    body_msg({"count": "c", "query": {"_id": 1}}),
    # neosqlite reads and filters every document in Python for these
    body_msg({"find": "c", "filter": {"_id": 1, "$or": [{"a": 1}]}}),
    body_msg({"find": "c", "filter": {"_id": {"$in": []}}}),
    body_msg({"find": "c", "filter": {"_id": 1, "a": {"$regex": "x"}}}),
    body_msg({"find": "c", "filter": {"_id": 1, "a": {"b": 1}}}),
    # large values (a job's output) are not written on the loop
    body_msg({"insert": "c"}, documents=[{"out": "x" * 100000}]),
    body_msg({"update": "c"}, updates=[{"q": {"_id": 1}, "u": {
        "$set": {"out": "x" * 100000}}}]),
])
def test_requests_that_may_scan_or_wait(msg):
    assert not is_short_request(msg)
