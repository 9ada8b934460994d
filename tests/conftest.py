"""Shared fixtures: real database servers, started once per session.

* ``core4_env`` — a fresh database on the session's NX-27017 server, and a
  temporary core4 home, made visible to this process and to every process it
  starts through ``CORE4_OPTION_*`` environment variables.
* ``fidelity_env`` — the same, parametrised over NX-27017, SecantusDB (a
  stand-in for a real mongod) and, when ``CORE4_TEST_MONGO_URL`` is set, a
  real MongoDB: the data-layer and queue tests use it so nothing relies on an
  NX quirk.
"""

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pymongo
import pytest

from core4.config import reset_config
from core4.mongo import embedded
from tests.support import WorkerProcess, worker_env

REAL_MONGO = os.environ.get("CORE4_TEST_MONGO_URL")
BACKENDS = ["nx", "secantus"] + (["mongodb"] if REAL_MONGO else [])
_COUNTER = itertools.count()


def free_port():
    """Return a free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_ping(url, timeout=60.0):
    """Poll ``url`` until the server answers a ping."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = pymongo.MongoClient(url, serverSelectionTimeoutMS=500)
            client.admin.command("ping")
            client.close()
            return
        except pymongo.errors.PyMongoError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Servers:
    """Database servers of the session, started on first use."""

    def __init__(self, base):
        self.base = base
        self.urls = {}
        self.procs = []

    def url(self, backend):
        if backend not in self.urls:
            self.urls[backend] = getattr(self, "_start_" + backend)()
        return self.urls[backend]

    def _start_nx(self):
        return embedded.ensure_server(os.path.join(self.base, "nx"))

    def _start_secantus(self):
        port = free_port()
        data = os.path.join(self.base, "secantus")
        os.makedirs(data, exist_ok=True)
        exe = os.path.join(os.path.dirname(sys.executable), "secantusd-py")
        log = open(os.path.join(data, "out.log"), "wb")
        proc = subprocess.Popen(
            [exe, "--host", "127.0.0.1", "--port", str(port),
             "--storage-path", data, "--sync-on-commit"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        url = "mongodb://127.0.0.1:%d/" % port
        wait_for_ping(url)
        return url

    def _start_mongodb(self):
        return REAL_MONGO

    def stop(self):
        if "nx" in self.urls:
            embedded.stop_server(os.path.join(self.base, "nx"))
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def servers():
    """The session's database servers (NX-27017 always, others on use)."""
    base = tempfile.mkdtemp(prefix="core4-servers-")
    found = Servers(base)
    yield found
    found.stop()
    shutil.rmtree(base, ignore_errors=True)


class Core4Env:
    """What a test's core4 sees: server url, database name and home."""

    def __init__(self, backend, url, database, home):
        self.backend = backend
        self.url = url
        self.database = database
        self.home = home

    def client(self):
        """A pymongo client of the server; times read tz-aware (UTC), as
        core4 reads them."""
        return pymongo.MongoClient(self.url, tz_aware=True)

    def db(self):
        return self.client()[self.database]


def _make_env(backend, url, monkeypatch, tmp_path):
    database = "t%d_%d" % (os.getpid(), next(_COUNTER))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url", url)
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_database", database)
    monkeypatch.setenv("CORE4_OPTION_folder__home", str(home))
    monkeypatch.setenv("CORE4_CONFIG", str(_empty_local(tmp_path)))
    reset_config()
    return Core4Env(backend, url, database, str(home))


def _empty_local(tmp_path):
    path = tmp_path / "local.yaml"
    if not path.exists():
        path.write_text("{}\n")
    return path


def _drop(env):
    client = pymongo.MongoClient(env.url, serverSelectionTimeoutMS=2000)
    try:
        client.drop_database(env.database)
    except pymongo.errors.PyMongoError:
        pass
    client.close()
    reset_config()


@pytest.fixture
def core4_env(servers, monkeypatch, tmp_path):
    """A fresh database on the session's NX-27017 server for this test."""
    env = _make_env("nx", servers.url("nx"), monkeypatch, tmp_path)
    yield env
    _drop(env)


@pytest.fixture(params=BACKENDS)
def fidelity_env(request, servers, monkeypatch, tmp_path):
    """A fresh database on each backend in turn (NX, SecantusDB, MongoDB)."""
    env = _make_env(request.param, servers.url(request.param), monkeypatch,
                    tmp_path)
    yield env
    _drop(env)


@pytest.fixture
def db(core4_env):
    """The test's database (pymongo) on the session's NX-27017 server."""
    client = core4_env.client()
    yield client[core4_env.database]
    client.close()


#: numbers of the log folders of start_worker's workers
_WORKER_LOGS = itertools.count()


@pytest.fixture
def start_worker(core4_env, tmp_path):
    """Start a worker (``start_worker(name, start_method, wait, **env)``);
    every worker started is stopped at the end of the test, and so is every
    job process listed in ``start_worker.orphans`` (job processes of killed
    workers)."""
    started = []
    orphans = []

    def start(name="w", start_method="fork", wait=True, **options):
        log_dir = tmp_path / ("log%d" % next(_WORKER_LOGS))
        log_dir.mkdir()
        worker = WorkerProcess(name, start_method=start_method,
                               env=worker_env(**options),
                               log_dir=str(log_dir))
        started.append(worker)
        if wait:
            client = core4_env.client()
            try:
                worker.wait_registered(client[core4_env.database], 60)
            except AssertionError:
                raise AssertionError("worker %s did not register; log:\n%s"
                                     % (name, worker.output()[-2000:]))
            finally:
                client.close()
        return worker

    start.orphans = orphans
    yield start
    for worker in started:
        worker.stop()
    for pid in orphans:
        try:
            job = psutil.Process(pid)
            if "core4" in " ".join(job.cmdline()):
                job.kill()
        except psutil.Error:
            pass
