"""Containers served by ``coco --application``: configuration (enabled,
root), ``--filter``, refusals at start, the registration in sys_worker,
stopping by ``coco --halt`` and SIGTERM, and the proxy to a project's
server (streaming, the client leaving).

Test containers come from small *installed projects*: a package written
into a folder on PYTHONPATH and ``<home>/<name>/.venv`` linked to core4's
own venv. ``coco --application`` serves them as it serves every project:
from a child process (``.venv/bin/python -m core4.api.child NAME``) behind
its proxy. Each test starts its own app server on a free port, with its
own home, local configuration file and database.
"""

import os
import signal
import socket
import subprocess
import sys

import psutil
import pymongo
import pytest
import requests

from core4.api.discover import core4_containers
from tests.conftest import free_port
from tests.support import ROOT, FAST, wait_for

pytestmark = pytest.mark.timeout(300)

ADMIN = ("admin", "admin-secret-2")
API = "/core4/api/v1"

HANDLERS = '''
import asyncio
import os
import time

from core4.api import CoreApiContainer, CoreRequestHandler


class Hello(CoreRequestHandler):
    """Say which container answers."""
    public = True
    who = None

    def get(self):
        self.reply({"who": self.who, "path": self.request.path,
                    "host": self.request.host,
                    "scheme": self.request.protocol})

    def post(self):
        self.set_header("X-Echo", self.get_argument("text"))
        self.set_cookie("seen", "yes")
        self.reply({"who": self.who, "text": self.get_argument("text"),
                    "n": self.get_argument("n", as_type=int)}, code=201)


class Stream(CoreRequestHandler):
    """Server-sent events: "first" at once, "second" once the file
    ``flag`` exists; writes the file ``closed`` when the client left."""
    public = True
    gone = False

    async def get(self):
        self.set_header("Content-Type", "text/event-stream")
        self.write("data: first\\n\\n")
        await self.flush()
        flag = self.get_argument("flag")
        deadline = time.monotonic() + 30
        while not (self.gone or os.path.exists(flag)
                   or time.monotonic() > deadline):
            await asyncio.sleep(0.05)
        if not self.gone:
            self.finish("data: second\\n\\n")

    def on_connection_close(self):
        self.gone = True
        with open(self.get_argument("closed"), "w") as handle:
            handle.write("closed\\n")
'''

PACKAGES = {
    "capi/api.py": HANDLERS + '''

class AlphaApi(CoreApiContainer):
    root = "/capi/alpha"
    rules = [("/hello", Hello, {"who": "alpha"}), ("/stream", Stream)]


class BetaApi(CoreApiContainer):
    """Disabled by the configuration of the test."""
    root = "/capi/beta"
    rules = [("/hello", Hello, {"who": "beta"})]


class GammaApi(CoreApiContainer):
    """Moved by the configuration of the test."""
    root = "/capi/gamma"
    rules = [("/hello", Hello, {"who": "gamma"})]


class OffApi(CoreApiContainer):
    """Disabled: its root is Alpha's, and that is no clash."""
    enabled = False
    root = "/capi/alpha"
    rules = [("/hello", Hello, {"who": "off"})]


class RootApi(CoreApiContainer):
    """The default root: /capi."""
    rules = [("/hello", Hello, {"who": "root"})]
''',
    "dupapi/api.py": HANDLERS + '''

class OneApi(CoreApiContainer):
    root = "/dup"
    rules = [("/one", Hello)]


class TwoApi(CoreApiContainer):
    root = "/dup"
    rules = [("/two", Hello)]
''',
    "duproute/api.py": HANDLERS + '''

class TwiceApi(CoreApiContainer):
    rules = [("/x", Hello), ("/x", Hello)]
''',
    "badimport/api.py": "raise RuntimeError('badimport is broken')\n",
}

#: core4's own containers
CORE4 = [container.qual_name() for container in core4_containers()]
NO_CORE4 = "api:\n  containers:\n" + "".join(
    "    %s: {enabled: false}\n" % name for name in CORE4)

CONFIG = """
api:
  containers:
    capi.api.BetaApi: {enabled: false}
capi:
  api:
    GammaApi: {root: /moved/gamma}
"""


@pytest.fixture(scope="module")
def world(servers, tmp_path_factory):
    """The packages of the test projects and a database."""
    base = tmp_path_factory.mktemp("containers")
    packages = base / "packages"
    for name, text in PACKAGES.items():
        path = packages / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").write_text(
            '__project__ = "core4"\n__version__ = "0.1.0"\n')
        path.write_text(text)
    url = servers.url("nx")
    database = "containers%d" % os.getpid()
    client = pymongo.MongoClient(url)
    yield {"base": base, "packages": str(packages), "url": url,
           "db": client[database], "database": database}
    client.drop_database(database)
    client.close()


class App:
    """One ``coco --application`` process of a test."""

    def __init__(self, world, home, args, config, log_path):
        self.world = world
        self.db = world["db"]
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        local = os.path.join(home, "..", "local.yaml")
        with open(local, "w") as handle:
            handle.write(config or "{}\n")
        self.env = dict(os.environ, **FAST)
        self.env.update({
            "CORE4_OPTION_DEFAULT__mongo_url": world["url"],
            "CORE4_OPTION_DEFAULT__mongo_database": world["database"],
            "CORE4_OPTION_folder__home": home,
            "CORE4_CONFIG": local,
            "CORE4_OPTION_api__admin_password": ADMIN[1],
            "PYTHONPATH": world["packages"] + os.pathsep + ROOT})
        self.args = [sys.executable, "-m", "core4.script.coco",
                     "--application", *args]
        if "--port" not in args:
            self.args += ["--port", str(self.port)]
        self.log_path = log_path
        self.proc = None

    def run(self, timeout=60):
        """Run to the end (a refused start); return the CompletedProcess."""
        return subprocess.run(self.args, env=self.env, cwd=ROOT,
                              capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self):
        """Start; return once it serves."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError("app server exited %s:\n%s" % (
                    self.proc.returncode, self.output()))
            return "core4: serving on" in self.output()
        wait_for(serving, 90, message="the app server to serve")
        return self

    def output(self):
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def get(self, path, **kwargs):
        kwargs.setdefault("timeout", 30)
        return requests.get(self.url + path, **kwargs)

    def children(self):
        """The project servers this app server started."""
        return [p for p in psutil.Process(self.proc.pid).children()
                if "core4.api.child" in p.cmdline()]

    def registration(self):
        return self.db.sys_worker.find_one({"pid": self.proc.pid})

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            self._log.close()


@pytest.fixture
def app(world, tmp_path):
    """Make (not start) an app server: ``app(projects, *args,
    config=...)``; every one started is killed at the end."""
    made = []

    def make(projects=(), *args, config=None):
        home = tmp_path / ("home%d" % len(made))
        home.mkdir()
        for project in projects:
            (home / project).mkdir()
            if project == "broken":
                bin_dir = home / project / ".venv" / "bin"
                bin_dir.mkdir(parents=True)
                python = bin_dir / "python"
                python.write_text("#!/bin/sh\necho 'broken python' >&2\n"
                                  "exit 1\n")
                python.chmod(0o755)
            else:
                os.symlink(sys.prefix, str(home / project / ".venv"))
        made.append(App(world, str(home), list(args), config,
                        str(tmp_path / ("app%d.log" % len(made)))))
        return made[-1]

    yield make
    for each in made:
        each.stop()


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def refused(proc):
    """Assert a refused start: exit 2, the last line of stderr the one
    message ``coco: ...``, no traceback; return the message."""
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    assert proc.returncode == 2, (proc.returncode, output[-3000:])
    lines = proc.stderr.splitlines()
    messages = [line for line in lines if line.startswith("coco: ")]
    assert messages == [lines[-1]], proc.stderr[-3000:]
    return lines[-1]


# ---------------------------------------------------------------------------

def test_containers_served_as_configured_then_halt(app, world):
    server = app(["capi", "broken", "badimport"], "ctest1",
                 config=CONFIG).start()
    hello = server.get("/capi/alpha/hello")
    assert hello.status_code == 200, hello.text
    # the project's handler sees the request as the client sent it
    assert hello.json()["data"] == {
        "who": "alpha", "path": "/capi/alpha/hello", "scheme": "http",
        "host": "127.0.0.1:%d" % server.port}
    assert server.get("/capi/hello").json()["data"]["who"] == "root"
    moved = server.get("/moved/gamma/hello")
    assert moved.status_code == 200 and moved.json()["data"]["who"] == \
        "gamma"
    for path in ("/capi/gamma/hello", "/capi/beta/hello"):
        response = server.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == 404
        assert response.json()["message"].startswith("no route"), path
    assert server.get(API + "/openapi.json").status_code == 200
    # a broken project and one that does not import are logged by name
    output = server.output()
    assert "project broken" in output and "broken python" in output, output
    assert "project badimport" in output, output
    assert "badimport is broken" in output, output

    # registered: kind app, the containers, a heartbeat that goes on
    doc = server.registration()
    assert doc["_id"] == "ctest1@" + doc["hostname"], doc
    assert doc["kind"] == "app" and doc["phase"] == "loop", doc
    assert doc["port"] == server.port and doc["url"] == server.url
    assert sorted(doc["containers"]) == sorted([
        "capi.api.AlphaApi", "capi.api.GammaApi", "capi.api.RootApi"]
        + CORE4), doc
    wait_for(lambda: server.registration()["heartbeat"] > doc["heartbeat"],
             10, message="a heartbeat")

    # the same name cannot start twice, and the running one is untouched
    again = app([], "ctest1").run()
    line = refused(again)
    assert "ctest1@" in line and "already running" in line, line
    assert server.registration()["phase"] == "loop"

    children = server.children()
    assert len(children) == 1, children   # capi; broken/badimport ended
    halt = subprocess.run(
        [sys.executable, "-m", "core4.script.coco", "--halt"],
        env=server.env, capture_output=True, text=True, timeout=60)
    assert halt.returncode == 0, halt.stderr
    assert server.proc.wait(30) == 0, server.output()[-3000:]
    assert server.registration()["phase"] == "exit"
    wait_for(lambda: gone(children[0].pid), 10,
             message="the project server to end")


def test_filter_then_sigterm(app):
    server = app(["capi"], "ctest2", "--filter", "capi.api.Alpha").start()
    assert server.get("/capi/alpha/hello").status_code == 200
    for path in ("/capi/hello", "/moved/gamma/hello", "/capi/gamma/hello",
                 API + "/openapi.json"):
        assert server.get(path).status_code == 404, path
    assert server.registration()["containers"] == ["capi.api.AlphaApi"]
    children = server.children()
    assert len(children) == 1, children
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.output()[-3000:]
    assert server.registration()["phase"] == "exit"
    wait_for(lambda: gone(children[0].pid), 10,
             message="the project server to end")

    # a filter no container of capi can match: capi is not even started
    other = app(["capi"], "ctest3", "--filter", "core4.api.v1").start()
    assert other.get(API + "/openapi.json").status_code == 200
    assert other.get("/capi/alpha/hello").status_code == 404
    assert other.children() == []


@pytest.mark.parametrize("projects, config, expected", [
    (["capi", "dupapi"], None, "project dupapi: containers "
     "dupapi.api.OneApi and dupapi.api.TwoApi both use root '/dup'"),
    (["duproute"], None, "route /duproute/x is declared twice"),
    (["capi"], "api:\n  containers:\n    "
     "core4.api.v1.container.CoreApiServer: {root: /capi/alpha}\n",
     "both use root '/capi/alpha'"),
    (["capi"], "capi:\n  api:\n    AlphaApi: {root: alpha}\n",
     "capi.api.AlphaApi: root 'alpha' must start and must not end with /"),
    ([], NO_CORE4, "coco: no container to serve"),
], ids=["shared-root", "twice-route", "core4-root", "bad-root", "nothing"])
def test_misconfigured_containers_refuse_to_start(app, projects, config,
                                                  expected):
    server = app(projects, "ctest4", config=config)
    proc = server.run()
    line = refused(proc)
    assert expected in line, line
    doc = server.db.sys_worker.find_one({"_id": {"$regex": "^ctest4@"}})
    assert doc is None or doc["phase"] == "exit", doc
    # no project server is left behind
    home = server.env["CORE4_OPTION_folder__home"]
    assert not [p for p in psutil.process_iter(["cmdline"])
                if (p.info["cmdline"] or [""])[0].startswith(home)]


def test_start_errors(app):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = refused(app([], "ctest5", "--port", str(port)).run())
        assert line == "coco: port %d on 127.0.0.1 is already in use" % \
            port, line
    line = refused(app([], "ctest6", "--project", "nope").run())
    assert "project nope is not installed" in line, line
    line = refused(app(["capi"], "ctest7", "--filter", "nothing.").run())
    assert line == "coco: no container to serve (see the log above)", line


def test_proxy_relays_and_streams(app, tmp_path):
    server = app(["capi"], "ctest8").start()
    # a body, arguments, status, headers and cookies pass both ways
    response = requests.post(server.url + "/capi/alpha/hello?n=7",
                             json={"text": "hi there"}, timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["data"] == {"who": "alpha", "text": "hi there",
                                       "n": 7}
    assert response.headers["X-Echo"] == "hi there"
    assert response.cookies.get("seen") == "yes"
    bad = requests.post(server.url + "/capi/alpha/hello", data="{nope",
                        headers={"Content-Type": "application/json"},
                        timeout=30)
    assert bad.status_code == 400, bad.text
    assert "not valid JSON" in bad.json()["message"]

    # each event arrives as it is sent, not when the response ends
    flag, closed = tmp_path / "flag", tmp_path / "closed"
    stream = requests.get(server.url + "/capi/alpha/stream", params={
        "flag": str(flag), "closed": str(closed)}, stream=True, timeout=10)
    assert stream.status_code == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    chunks = stream.iter_content(chunk_size=None)
    assert next(chunks) == b"data: first\n\n"
    flag.write_text("go")
    assert b"".join(chunks) == b"data: second\n\n"
    assert not closed.exists()

    # the client leaves: the project's handler sees it at once
    closed2 = tmp_path / "closed2"
    stream = requests.get(server.url + "/capi/alpha/stream", params={
        "flag": str(tmp_path / "never"), "closed": str(closed2)},
        stream=True, timeout=10)
    assert next(stream.iter_content(chunk_size=None)) == b"data: first\n\n"
    stream.close()
    wait_for(closed2.exists, 10, message="the project handler to see the "
             "client leave")

    # the project server dies in the middle of an answer: the client sees
    # a cut-off response, not a complete one
    stream = requests.get(server.url + "/capi/alpha/stream", params={
        "flag": str(tmp_path / "never"), "closed": str(tmp_path / "c3")},
        stream=True, timeout=10)
    chunks = stream.iter_content(chunk_size=None)
    assert next(chunks) == b"data: first\n\n"
    children = server.children()
    children[0].kill()
    wait_for(lambda: gone(children[0].pid), 10, message="the kill")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        b"".join(chunks)

    # the project server is gone: 502 in the envelope, the rest still served
    response = server.get("/capi/alpha/hello")
    assert response.status_code == 502, response.text
    assert response.json()["message"].startswith("project capi "), \
        response.text
    assert server.get(API + "/openapi.json").status_code == 200
