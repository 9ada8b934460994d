"""The embedded database is a service: it keeps its port, and daemons ride
out its death (issue 17).

Each test has its own core4 home without ``mongo_url``, so core4 starts its
own embedded NX-27017 server there, as on a user's machine. The server is
killed with SIGKILL under a running worker and scheduler; jobs enqueued
before, during and after all complete exactly once.
"""

import json
import os
import signal
import subprocess
import sys

import psutil
import pymongo
import pytest

from core4.config import reset_config
from core4.mongo import embedded, nxauth
from core4.mongo import now
from tests.conftest import free_port
from tests.support import ROOT, WorkerProcess, wait_for, worker_env

DUMMY = "core4.queue.helper.job.DummyJob"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A core4 home whose database is the embedded server (started on
    demand); the server is stopped at the end."""
    home = tmp_path / "home"
    home.mkdir()
    local = tmp_path / "local.yaml"
    local.write_text("{}\n")
    monkeypatch.delenv("CORE4_OPTION_DEFAULT__mongo_url", raising=False)
    monkeypatch.setenv("CORE4_OPTION_folder__home", str(home))
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_database", "svc")
    monkeypatch.setenv("CORE4_CONFIG", str(local))
    reset_config()
    yield str(home)
    embedded.stop_server(os.path.join(str(home), "mongo"))
    reset_config()


def coco(*args, timeout=120):
    """Run ``coco ARGS``; return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "core4.script.coco", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT))


def state(home):
    with open(os.path.join(home, "mongo", "server.json")) as handle:
        return json.load(handle)


def database(home):
    """A client of the home's embedded server (with its credentials) and
    the test's database."""
    url = nxauth.client_url(state(home)["url"], nxauth.read_credentials(
        os.path.join(home, "mongo")))
    client = pymongo.MongoClient(url, tz_aware=True,
                                 serverSelectionTimeoutMS=30000)
    return client, client.svc


def enqueue(*args):
    out = coco("--enqueue", DUMMY, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def kill_server(home):
    """SIGKILL the embedded server; return its port."""
    before = state(home)
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(before["pid"]) or psutil.Process(
        before["pid"]).status() == psutil.STATUS_ZOMBIE, 10,
        message="the server to die")
    return before["port"]


def all_complete_once(db, ids, worker):
    """Every job in ``ids`` complete in the journal, each started once."""
    def done():
        docs = list(db.sys_journal.find({"_id": {"$in": ids}}))
        return docs if len(docs) == len(ids) and all(
            d["state"] == "complete" for d in docs) else None
    try:
        docs = wait_for(done, 120, 0.2, "all jobs complete")
    except AssertionError:
        raise AssertionError(worker.output()[-3000:])
    assert all(doc["trial"] == 1 for doc in docs), docs
    return docs


@pytest.fixture
def daemons(home, tmp_path):
    """A worker, a scheduler and an app server on the home's embedded
    server."""
    assert coco("--alive").returncode == 0  # starts the server
    worker = WorkerProcess("svc", env=worker_env(), log_dir=str(tmp_path))
    others = [subprocess.Popen(
        [sys.executable, "-m", "core4.script.coco", *args],
        env=worker_env(), stdout=open(tmp_path / ("%s.log" % args[0][2:]),
                                      "wb"),
        stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        for args in (["--scheduler"],
                     ["--application", "--port", str(free_port())])]
    client, db = database(home)
    worker.wait_registered(db, 60)
    for kind in ("scheduler", "app"):
        wait_for(lambda: db.sys_worker.find_one({"kind": kind,
                                                 "phase": "loop"}), 60,
                 message="the %s to run" % kind)
    client.close()
    yield worker, others
    worker.stop()
    for proc in others:
        proc.kill()
        proc.wait(10)


def test_killed_server_comes_back_on_its_port(home, daemons):
    worker, _ = daemons
    before = [enqueue("sleep=3", "i=%d" % i) for i in range(3)]
    client, db = database(home)
    from bson import ObjectId
    wait_for(lambda: db.sys_queue.count_documents({"state": "running"}), 30,
             message="jobs running")
    client.close()
    port = kill_server(home)
    # the next coco command needs the server and starts it again
    during = [enqueue("sleep=1", "i=%d" % i) for i in range(10, 12)]
    assert state(home)["port"] == port
    after = [enqueue("sleep=1", "i=%d" % i) for i in range(20, 22)]
    client, db = database(home)
    ids = [ObjectId(i) for i in before + during + after]
    all_complete_once(db, ids, worker)
    # every daemon's heartbeat goes on after the restart, and coco --alive
    # lists them all
    restarted = now()
    wait_for(lambda: db.sys_worker.count_documents(
        {"kind": {"$in": ["worker", "scheduler", "app"]},
         "heartbeat": {"$gt": restarted}}) == 3, 60,
        message="the heartbeats of worker, scheduler and app server")
    out = coco("--alive")
    for kind in ("worker", "scheduler", "app"):
        assert kind in out.stdout, out.stdout
    # at most one line when it lost the server (not one a second)
    lost = worker.output().count("database unreachable")
    assert lost <= 1, worker.output()[-3000:]
    client.close()


def test_worker_restarts_the_server_itself(home, daemons):
    worker, _ = daemons
    job = enqueue("sleep=4")
    client, db = database(home)
    wait_for(lambda: db.sys_queue.find_one({"state": "running"}), 30,
             message="the job running")
    client.close()
    port = kill_server(home)
    # no coco command: the daemons find the server gone and start it
    wait_for(lambda: embedded.ping(port), 60, 0.2,
             "a daemon to restart the server on port %d" % port)
    client, db = database(home)
    from bson import ObjectId
    all_complete_once(db, [ObjectId(job)], worker)
    client.close()
