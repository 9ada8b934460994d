"""Fixtures of the API tests: one real app server (``coco --application``
on a free loopback port) and one real worker for the whole package, on a
database of their own; HTTP through ``requests``.

Tests share the server, so each uses its own job arguments or user names
(see :func:`unique`).
"""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pymongo
import pytest
import requests

from core4.config import reset_config
from tests.conftest import free_port
from tests.support import ROOT, WorkerProcess, wait_for, worker_env

ADMIN_PASSWORD = "admin-secret-1"
API = "/core4/api/v1"
_COUNTER = itertools.count()


def unique(prefix="t"):
    """Return a name no other test of the session uses."""
    return "%s%d_%d" % (prefix, os.getpid(), next(_COUNTER))


class ApiServer:
    """The running app server: its url, database and an admin token."""

    def __init__(self, url, db, env, process, log_path):
        self.url = url
        self.db = db
        self.env = env
        self.process = process
        self.log_path = log_path
        self._admin = None

    def output(self):
        """What the app server printed so far."""
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def request(self, method, path, token=None, auth=None, **kwargs):
        """Send ``method path`` (``path`` below the host, e.g.
        ``/core4/api/v1/job``) with a Bearer ``token`` or Basic ``auth``."""
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = "Bearer %s" % token
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=headers,
                                auth=auth, **kwargs)

    def login(self, username, password):
        """Return a token of ``username`` (asserting the login works)."""
        response = self.request("POST", API + "/login", json={
            "username": username, "password": password})
        assert response.status_code == 200, response.text
        return response.json()["data"]["token"]

    @property
    def admin(self):
        """A token of the admin user."""
        if self._admin is None:
            self._admin = self.login("admin", ADMIN_PASSWORD)
        return self._admin

    def create_user(self, permissions, roles=(), password="password-1"):
        """Create a user with ``permissions``; return ``(name, token)``."""
        name = unique("u")
        response = self.request("POST", API + "/roles", token=self.admin,
                                json={"name": name, "email": name + "@x.org",
                                      "password": password,
                                      "permissions": list(permissions),
                                      "roles": list(roles)})
        assert response.status_code == 201, response.text
        return name, self.login(name, password)


@pytest.fixture(scope="package")
def api_env(servers):
    """CORE4_OPTION_* environment of the package: database and home."""
    base = tempfile.mkdtemp(prefix="core4-api-")
    home = os.path.join(base, "home")
    os.makedirs(home)
    local = os.path.join(base, "local.yaml")
    with open(local, "w") as handle:
        handle.write("{}\n")
    database = "api%d" % os.getpid()
    url = servers.url("nx")
    values = {"CORE4_OPTION_DEFAULT__mongo_url": url,
              "CORE4_OPTION_DEFAULT__mongo_database": database,
              "CORE4_OPTION_folder__home": home,
              "CORE4_CONFIG": local,
              "CORE4_OPTION_api__admin_password": ADMIN_PASSWORD}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            patch.setenv(key, value)
        reset_config()
        yield {"url": url, "database": database, "home": home, "base": base}
    pymongo.MongoClient(url).drop_database(database)
    reset_config()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="package")
def api(api_env):
    """The package's app server (``coco --application``)."""
    port = free_port()
    log_path = os.path.join(api_env["base"], "app.log")
    log = open(log_path, "wb")
    env = worker_env(CORE4_OPTION_api__follow_interval="!!float 0.1")
    process = subprocess.Popen(
        [sys.executable, "-m", "core4.script.coco", "--application",
         "--port", str(port)], env=env, stdout=log,
        stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    client = pymongo.MongoClient(api_env["url"])
    db = client[api_env["database"]]
    server = ApiServer("http://127.0.0.1:%d" % port, db, env, process,
                       log_path)

    def answers():
        if process.poll() is not None:
            raise AssertionError("app server exited:\n" + server.output())
        try:
            return requests.get(server.url + API + "/openapi.json",
                                timeout=2).status_code == 200
        except requests.RequestException:
            return False
    wait_for(answers, 60, message="the app server to answer")
    yield server
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
    client.close()


@pytest.fixture(scope="package")
def api_worker(api, api_env):
    """A real worker on the app server's database."""
    worker = WorkerProcess("apiworker", env=api.env,
                           log_dir=api_env["base"])
    worker.wait_registered(api.db)
    yield worker
    worker.stop()
