"""Tests of core4.mongo.embedded with real NX-27017 processes (no mocks)."""

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import psutil
import pymongo
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing core4
    sys.path.insert(0, ROOT)

from core4.error import CoreDatabaseUnreachable  # noqa: E402
from core4.mongo.embedded import (HUNG_AFTER, ensure_server,  # noqa: E402
                                  server_status, stop_server)


def nx_processes(data_dir):
    """Return the running NX processes whose --data-dir is ``data_dir``."""
    data_dir = os.path.realpath(data_dir)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any("nx_27017" in part for part in cmdline) \
                and data_dir in cmdline:
            found.append(proc)
    return found


def wait_gone(pid, timeout=10.0):
    """Wait until ``pid`` has exited (reaping it if it is our child)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout)


@contextlib.contextmanager
def client(url):
    """Yield a pymongo client for ``url`` and close it afterwards."""
    mongo = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        yield mongo
    finally:
        mongo.close()


@pytest.fixture
def data_dir(tmp_path):
    """A fresh data dir; every server started on it is stopped afterwards."""
    path = str(tmp_path / "mongo")
    yield path
    stop_server(path)
    for proc in nx_processes(path):  # leftovers (e.g. a failed test)
        with contextlib.suppress(psutil.Error):
            proc.kill()
            proc.wait(5)


def test_start_on_demand(data_dir):
    assert server_status(data_dir) is None
    url = ensure_server(data_dir)
    assert url.startswith("mongodb://core4:") and url.endswith("/")
    with client(url) as mongo:
        assert mongo.admin.command("ping")["ok"] == 1
        mongo.core4test.things.insert_one({"_id": "a", "n": 1})
        assert mongo.core4test.things.find_one({"_id": "a"})["n"] == 1
    status = server_status(data_dir)
    # the recorded url has no credentials (coco --who shows it)
    assert status["alive"] is True and status["url"] == (
        "mongodb://127.0.0.1:%d/" % status["port"])
    assert url.endswith("@127.0.0.1:%d/" % status["port"])
    assert {"pid", "port", "url", "started_at", "python", "auth"} <= set(
        status)
    with open(os.path.join(data_dir, "server.json")) as handle:
        assert json.load(handle)["pid"] == status["pid"]
    assert [p.pid for p in nx_processes(data_dir)] == [status["pid"]]
    for name in ("nx.pid", "nx.log", "nx.out"):
        assert os.path.exists(os.path.join(data_dir, name))


def test_fast_path_same_server(data_dir):
    url = ensure_server(data_dir)
    pid = server_status(data_dir)["pid"]
    costs = []
    for _ in range(50):
        started = time.perf_counter()
        assert ensure_server(data_dir) == url
        costs.append(time.perf_counter() - started)
    median = statistics.median(costs) * 1000
    print("ensure_server fast path: median %.2f ms of 50" % median)
    assert median < 50
    assert server_status(data_dir)["pid"] == pid
    assert [p.pid for p in nx_processes(data_dir)] == [pid]


def test_data_persists_over_stop(data_dir):
    url = ensure_server(data_dir)
    with client(url) as mongo:
        mongo.core4test.things.insert_one({"_id": "kept", "v": 42})
    pid = server_status(data_dir)["pid"]
    assert stop_server(data_dir) is True
    assert not psutil.pid_exists(pid) or \
        psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert server_status(data_dir) is None
    assert nx_processes(data_dir) == []
    assert stop_server(data_dir) is False
    url = ensure_server(data_dir)
    with client(url) as mongo:
        assert mongo.core4test.things.find_one({"_id": "kept"})["v"] == 42


def test_killed_server_is_restarted(data_dir):
    url = ensure_server(data_dir)
    with client(url) as mongo:
        mongo.core4test.things.insert_one({"_id": "k", "v": 1})
    old = server_status(data_dir)["pid"]
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    assert server_status(data_dir)["alive"] is False
    url = ensure_server(data_dir)
    new = server_status(data_dir)["pid"]
    assert new != old
    assert [p.pid for p in nx_processes(data_dir)] == [new]
    with client(url) as mongo:
        assert mongo.core4test.things.find_one({"_id": "k"})["v"] == 1


def test_pid_of_unrelated_process_is_not_trusted(data_dir):
    url = ensure_server(data_dir)
    stop_server(data_dir)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    state = {"pid": os.getpid(), "port": port,
             "url": "mongodb://127.0.0.1:%d/" % port,
             "started_at": time.time(), "python": sys.executable,
             "auth": True}
    with open(os.path.join(data_dir, "server.json"), "w") as handle:
        json.dump(state, handle)
    with open(os.path.join(data_dir, "nx.pid"), "w") as handle:
        handle.write(str(os.getpid()))  # NX itself would refuse to start
    assert server_status(data_dir)["alive"] is False
    url = ensure_server(data_dir)
    status = server_status(data_dir)
    assert status["pid"] != os.getpid() and status["alive"] is True
    assert [p.pid for p in nx_processes(data_dir)] == [status["pid"]]
    with client(url) as mongo:
        assert mongo.admin.command("ping")["ok"] == 1


def test_silent_server_is_replaced(data_dir):
    ensure_server(data_dir)
    old = server_status(data_dir)["pid"]
    os.kill(old, signal.SIGSTOP)  # alive, but answers nothing
    started = time.monotonic()
    url = ensure_server(data_dir)
    assert time.monotonic() - started < HUNG_AFTER + 10
    wait_gone(old, 1)
    assert not psutil.pid_exists(old)
    new = server_status(data_dir)["pid"]
    assert new != old
    assert [p.pid for p in nx_processes(data_dir)] == [new]
    with client(url) as mongo:
        assert mongo.admin.command("ping")["ok"] == 1


RACER = """
import os, sys, time
from core4.mongo.embedded import ensure_server
open(sys.argv[2], "w").close()
deadline = time.monotonic() + 20
while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.002)
print(ensure_server(sys.argv[1]))
"""


def test_concurrent_start_gives_one_server(data_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    go = str(tmp_path / "go")
    ready = [str(tmp_path / ("ready%d" % i)) for i in range(4)]
    racers = [subprocess.Popen([sys.executable, "-c", RACER, data_dir, r, go],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env=env) for r in ready]
    deadline = time.monotonic() + 20
    while not all(os.path.exists(r) for r in ready):
        assert time.monotonic() < deadline, "racers did not start"
        time.sleep(0.005)
    open(go, "w").close()
    urls = []
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
        urls.append(out.strip())
    assert len(set(urls)) == 1 and urls[0].startswith("mongodb://")
    procs = nx_processes(data_dir)
    assert [p.pid for p in procs] == [server_status(data_dir)["pid"]]
    with client(urls[0]) as mongo:
        assert mongo.admin.command("ping")["ok"] == 1


def test_data_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    bad = str(blocker / "mongo")
    with pytest.raises(CoreDatabaseUnreachable) as info:
        ensure_server(bad, timeout=5)
    message = str(info.value)
    assert "\n" not in message and bad in message
    assert server_status(bad) is None
    assert stop_server(bad) is False


def test_server_that_exits_at_once(data_dir):
    os.makedirs(os.path.join(data_dir, "nx.log"))  # NX cannot open its log
    started = time.monotonic()
    with pytest.raises(CoreDatabaseUnreachable) as info:
        ensure_server(data_dir, timeout=20)
    assert time.monotonic() - started < 10  # noticed the exit, no timeout
    message = str(info.value)
    assert "\n" not in message and data_dir in message
    assert "directory" in message.lower()
    assert server_status(data_dir) is None
    assert nx_processes(data_dir) == []
