"""A project's containers are served from its own venv: ``coco
--application`` started from core4's environment runs ``mypro``'s
container in mypro's ``.venv`` (where ``onlyhere`` is installed) and
proxies ``/mypro/...`` to it; authentication and api:// permissions are
checked there, against the same database.

The module writes ``mypro/api.py`` into the project (removed at the end)
and runs one app server for most tests, on a database of its own.
"""

import os
import shutil
import signal
import subprocess
import sys

import psutil
import pymongo
import pytest
import requests

from tests.conftest import free_port
from tests.projects.conftest import clean_env, run
from tests.support import FAST, wait_for

pytestmark = pytest.mark.timeout(900)

PASSWORD = "admin-secret-3"
ADMIN = ("admin", PASSWORD)
API = "/core4/api/v1"

MYAPI = '''
"""mypro's API (written by tests/projects/test_project_api.py)."""

import asyncio
import os
import sys
import time

import onlyhere
from core4.api import CoreApiContainer, CoreRequestHandler


class WhereHandler(CoreRequestHandler):
    """Where the handler runs."""

    def get(self):
        import core4
        self.reply({"executable": sys.executable, "prefix": sys.prefix,
                    "core4": core4.__file__, "onlyhere": onlyhere.VALUE,
                    "pid": os.getpid(), "user": self.user["name"]})

    def post(self):
        self.reply({"text": self.get_argument("text"),
                    "user": self.user["name"]}, code=201)


class EventHandler(CoreRequestHandler):
    """Server-sent events: one at once, one when the file ``flag``
    exists."""

    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.write("data: %s\\n\\n" % onlyhere.VALUE)
        await self.flush()
        flag = self.get_argument("flag")
        deadline = time.monotonic() + 30
        while not os.path.exists(flag) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.finish("data: done\\n\\n")


class MyApi(CoreApiContainer):
    """mypro's container, at the default root /mypro."""
    rules = [("/where", WhereHandler), ("/events", EventHandler)]
'''


class App:
    """A ``coco --application`` process started from core4's
    environment (no PYTHONPATH)."""

    def __init__(self, space, database, log_path, *args):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = log_path
        self.admin = None      # an admin token, once needed
        self.env = clean_env(**FAST)
        self.env.update({"CORE4_OPTION_DEFAULT__mongo_database": database,
                         "CORE4_OPTION_api__admin_password": PASSWORD})
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core4.script.coco", "--application",
             *args, "--port", str(self.port)], env=self.env,
            cwd=space.neutral, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError("app server exited %s:\n%s" % (
                    self.proc.returncode, self.output()))
            return "core4: serving on" in self.output()
        wait_for(serving, 120, message="the app server to serve")

    def output(self):
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def request(self, method, path, token=None, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = "Bearer " + token
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=headers,
                                **kwargs)

    def children(self):
        return [p for p in psutil.Process(self.proc.pid).children()
                if "core4.api.child" in p.cmdline()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def project_api(space, mypro, tmp_path_factory):
    """``mypro/api.py`` in the project, a database and a factory of app
    servers (stopped at the end)."""
    path = os.path.join(mypro.root, "mypro", "api.py")
    with open(path, "w") as handle:
        handle.write(MYAPI)
    database = "tprojapi%d" % os.getpid()
    base = tmp_path_factory.mktemp("project-api")
    started = []

    def start(*args):
        started.append(App(space, database, str(
            base / ("app%d.log" % len(started))), *args))
        return started[-1]

    client = pymongo.MongoClient(space.url)
    yield {"start": start, "db": client[database], "space": space}
    for app in started:
        app.stop()
    os.remove(path)
    client.drop_database(database)
    client.close()


@pytest.fixture(scope="module")
def app(project_api):
    """The module's app server: core4's API and every project."""
    return project_api["start"]()


def login(app, name, password):
    response = app.request("POST", API + "/login",
                           json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["data"]["token"]


def create_user(app, name, permissions):
    """Create ``name`` with ``permissions`` (as admin); return its token."""
    if app.admin is None:
        app.admin = login(app, *ADMIN)
    response = app.request("POST", API + "/roles", token=app.admin, json={
        "name": name, "email": name + "@x.org", "password": "password-1",
        "permissions": permissions})
    assert response.status_code == 201, response.text
    return login(app, name, "password-1")


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------------------

def test_project_container_runs_in_the_project_venv(space, app,
                                                    project_api):
    # neither mypro nor onlyhere can be imported in core4's environment
    proc = run([sys.executable, "-c", "import onlyhere"], cwd=space.neutral)
    assert "No module named 'onlyhere'" in proc.stderr, proc.stderr

    response = app.request("GET", "/mypro/where", auth=ADMIN)
    assert response.status_code == 200, (response.text, app.output())
    data = response.json()["data"]
    venv = os.path.join(space.home, "mypro", ".venv")
    assert data["executable"] == os.path.join(venv, "bin", "python"), data
    assert os.path.realpath(data["prefix"]) == os.path.realpath(venv), data
    assert os.path.realpath(data["core4"]).startswith(
        os.path.realpath(venv) + os.sep), data
    assert data["onlyhere"] == "onlyhere-42" and data["user"] == "admin"
    # served by a child of the app server, not by the app server itself
    assert data["pid"] in [p.pid for p in app.children()]
    assert data["pid"] != app.proc.pid

    # a token from core4's login (in the app server) works in the project
    token = login(app, *ADMIN)
    response = app.request("POST", "/mypro/where", token=token,
                           json={"text": "hello mypro"})
    assert response.status_code == 201, response.text
    assert response.json()["data"] == {"text": "hello mypro",
                                       "user": "admin"}

    doc = project_api["db"].sys_worker.find_one({"pid": app.proc.pid})
    assert doc["kind"] == "app" and doc["phase"] == "loop", doc
    assert "mypro.api.MyApi" in doc["containers"], doc


def test_login_and_permissions_are_checked_in_the_project(app):
    response = app.request("GET", "/mypro/where")
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == 401 and body["message"] == "login required"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = app.request("GET", "/mypro/where", auth=("admin", "wrong"))
    assert response.status_code == 401, response.text

    nobody = create_user(app, "apinobody", ["api://mypro.api.EventHandler"])
    response = app.request("GET", "/mypro/where", token=nobody)
    assert response.status_code == 403, response.text
    assert response.json()["message"] == \
        "GET /mypro/where is not permitted for apinobody"

    reader = create_user(app, "apireader", ["api://mypro.api.WhereHandler/r"])
    response = app.request("GET", "/mypro/where", token=reader)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["user"] == "apireader"
    response = app.request("POST", "/mypro/where", token=reader,
                           json={"text": "x"})
    assert response.status_code == 403, response.text

    writer = create_user(app, "apiwriter", ["api://mypro.api.WhereHandler"])
    response = app.request("POST", "/mypro/where", token=writer,
                           json={"text": "x"})
    assert response.status_code == 201, response.text


def test_events_stream_through_the_proxy(app, tmp_path):
    flag = tmp_path / "flag"
    response = app.request("GET", "/mypro/events", auth=ADMIN, stream=True,
                           params={"flag": str(flag)}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/event-stream"
    chunks = response.iter_content(chunk_size=None)
    # the first event arrives while the handler still waits for the flag
    assert next(chunks) == b"data: onlyhere-42\n\n"
    flag.write_text("go")
    assert b"".join(chunks) == b"data: done\n\n"


def test_broken_project_venv_leaves_the_others_served(space, project_api):
    """A project whose python does not start, and one whose .venv is a
    dangling link: logged by name; core4 and mypro are served."""
    broken = os.path.join(space.home, "brokenapi")
    os.makedirs(os.path.join(broken, ".venv", "bin"))
    python = os.path.join(broken, ".venv", "bin", "python")
    with open(python, "w") as handle:
        handle.write("#!/bin/sh\necho 'brokenapi python fails' >&2\n"
                     "exit 1\n")
    os.chmod(python, 0o755)
    dangling = os.path.join(space.home, "danglingapi")
    os.makedirs(dangling)
    os.symlink(os.path.join(dangling, ".venvs", "gone"),
               os.path.join(dangling, ".venv"))
    try:
        other = project_api["start"]("brokenenv")
    finally:
        shutil.rmtree(broken)
        shutil.rmtree(dangling)
    assert other.request("GET", API + "/openapi.json").status_code == 200
    response = other.request("GET", "/mypro/where", auth=ADMIN)
    assert response.status_code == 200, response.text
    output = other.output()
    assert "project brokenapi: its containers are not served" in output, \
        output
    assert "brokenapi python fails" in output, output
    assert "project danglingapi has no virtual environment" in output, \
        output
    assert "Traceback" not in output, output
    other.stop()
    assert other.proc.returncode == 0, output


def test_only_one_project_and_no_orphan_after_sigkill(project_api):
    only = project_api["start"]("onlymypro", "--project", "mypro")
    response = only.request("GET", API + "/openapi.json")
    assert response.status_code == 404, response.text
    assert response.json()["code"] == 404
    response = only.request("GET", "/mypro/where", auth=ADMIN)
    assert response.status_code == 200, response.text
    doc = project_api["db"].sys_worker.find_one({"pid": only.proc.pid})
    assert doc["containers"] == ["mypro.api.MyApi"], doc

    children = only.children()
    assert len(children) == 1, children
    only.proc.send_signal(signal.SIGKILL)
    only.proc.wait(10)
    wait_for(lambda: gone(children[0].pid), 15,
             message="the project server to end with its app server")
