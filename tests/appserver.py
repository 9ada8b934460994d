"""A real app server for tests: an isolated database and core4 home
(:func:`isolated_env`), ``coco --application`` on a free loopback port
(:func:`start_app_server`, :func:`stop_app_server`) and an HTTP client for
it (:class:`ApiServer`)."""

import contextlib
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


@contextlib.contextmanager
def isolated_env(servers, prefix):
    """Set CORE4_OPTION_* of a fresh database on the session's NX server
    and of a temporary core4 home (admin password ``ADMIN_PASSWORD``);
    yield ``{url, database, home, base}``; drop and remove them after."""
    base = tempfile.mkdtemp(prefix="core4-%s-" % prefix)
    home = os.path.join(base, "home")
    os.makedirs(home)
    local = os.path.join(base, "local.yaml")
    with open(local, "w") as handle:
        handle.write("{}\n")
    database = "%s%d" % (prefix, os.getpid())
    url = servers.url("nx")
    values = {"CORE4_OPTION_DEFAULT__mongo_url": url,
              "CORE4_OPTION_DEFAULT__mongo_database": database,
              "CORE4_OPTION_folder__home": home,
              "CORE4_CONFIG": local,
              "CORE4_OPTION_api__admin_password": ADMIN_PASSWORD}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in values.items():
                patch.setenv(key, value)
            reset_config()
            yield {"url": url, "database": database, "home": home,
                   "base": base}
    finally:
        pymongo.MongoClient(url).drop_database(database)
        reset_config()
        shutil.rmtree(base, ignore_errors=True)


def start_app_server(env, database=None, name="app", ready=API +
                     "/openapi.json", **options):
    """Start ``coco --application NAME`` for ``env`` (of
    :func:`isolated_env`) on a free port, on ``database`` (default the
    env's); ``options`` are environment variables (None removes one).
    Return the :class:`ApiServer` once ``ready`` answers 200."""
    database = database or env["database"]
    port = free_port()
    log_path = os.path.join(env["base"], "%s-%d.log" % (name, port))
    variables = worker_env(CORE4_OPTION_DEFAULT__mongo_database=database,
                           CORE4_OPTION_api__follow_interval="!!float 0.1")
    for key, value in options.items():
        variables.pop(key, None)
        if value is not None:
            variables[key] = value
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "core4.script.coco", "--application",
             name, "--port", str(port)], env=variables, stdout=log,
            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    db = pymongo.MongoClient(env["url"])[database]
    server = ApiServer("http://127.0.0.1:%d" % port, db, variables, process,
                       log_path)

    def answers():
        if process.poll() is not None:
            raise AssertionError("app server exited:\n" + server.output())
        try:
            return requests.get(server.url + ready,
                                timeout=2).status_code == 200
        except requests.RequestException:
            return False
    wait_for(answers, 60, message="app server %s to answer" % name)
    return server


def stop_app_server(server, drop=False):
    """Stop an app server of :func:`start_app_server` (SIGTERM, then
    SIGKILL) and optionally drop its database."""
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if drop:
        server.db.client.drop_database(server.db.name)
    server.db.client.close()


@contextlib.contextmanager
def worker_for(server, name, log_dir):
    """Run a real worker ``name`` on ``server``'s database while in the
    block; yield it once its loop runs."""
    worker = WorkerProcess(name, env=server.env, log_dir=log_dir)
    try:
        try:
            worker.wait_registered(server.db)
        except AssertionError as exc:
            raise AssertionError("%s; its output:\n%s" % (
                exc, worker.output()[-3000:])) from None
        yield worker
    finally:
        worker.stop()
