"""Fixtures of the dashboard tests: one real app server (``coco
--application``, dashboard at ``/``) and one real worker on a database of
their own, the registered job classes, and headless Chromium (Debian's
``/usr/bin/chromium``) driven by Playwright.

Every test gets a fresh browser context whose console errors and uncaught
page errors fail the test. Screenshots go to ``$CORE4_TEST_ARTEFACTS``
(default ``<repo>/test-artefacts/dashboard``).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pymongo
import pytest
import requests
from playwright.sync_api import expect

from core4.config import reset_config
from tests.api.conftest import ADMIN_PASSWORD, API, ApiServer
from tests.conftest import free_port
from tests.support import ROOT, WorkerProcess, wait_for, worker_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-quic", "--no-first-run",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTEFACTS = os.environ.get("CORE4_TEST_ARTEFACTS") or os.path.join(
    ROOT, "test-artefacts", "dashboard")
#: milliseconds Playwright's expect() and actions wait by default
TIMEOUT = 15000
expect.set_options(timeout=TIMEOUT)


@pytest.fixture(scope="package")
def dash_env(servers):
    """CORE4_OPTION_* environment of the package: database and home."""
    base = tempfile.mkdtemp(prefix="core4-dash-")
    home = os.path.join(base, "home")
    os.makedirs(home)
    local = os.path.join(base, "local.yaml")
    with open(local, "w") as handle:
        handle.write("{}\n")
    database = "dash%d" % os.getpid()
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
        yield {"url": url, "database": database, "base": base}
    pymongo.MongoClient(url).drop_database(database)
    reset_config()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="package")
def dash(dash_env):
    """The package's app server with the registered job classes."""
    port = free_port()
    log_path = os.path.join(dash_env["base"], "app.log")
    log = open(log_path, "wb")
    env = worker_env(CORE4_OPTION_api__follow_interval="!!float 0.1")
    process = subprocess.Popen(
        [sys.executable, "-m", "core4.script.coco", "--application",
         "--port", str(port)], env=env, stdout=log,
        stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    # the registry (GET /job/list) as the scheduler would fill it
    subprocess.run([sys.executable, "-m", "core4.script.coco", "--jobs",
                    "--introspect"], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=60)
    client = pymongo.MongoClient(dash_env["url"])
    server = ApiServer("http://127.0.0.1:%d" % port,
                       client[dash_env["database"]], env, process, log_path)

    def answers():
        if process.poll() is not None:
            raise AssertionError("app server exited:\n" + server.output())
        try:
            return requests.get(server.url + "/", timeout=2).status_code == 200
        except requests.ConnectionError:
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
def dash_worker(dash, dash_env):
    """A real worker on the app server's database."""
    worker = WorkerProcess("dashworker", env=dash.env,
                           log_dir=dash_env["base"])
    worker.wait_registered(dash.db)
    yield worker
    worker.stop()


@pytest.fixture(scope="package")
def chromium():
    """Headless Chromium of the package (Playwright)."""
    from playwright.sync_api import sync_playwright
    assert os.path.exists(CHROMIUM), (
        "%s is missing: install Debian's chromium (scripts/system-deps)"
        % CHROMIUM)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Session:
    """One browser context and page at the dashboard, with its console
    errors; ``login`` through the API (the cookie is shared with the
    page), ``shot`` saves a screenshot artefact."""

    def __init__(self, browser, server, width=1280, height=900):
        self.server = server
        self.context = browser.new_context(
            viewport={"width": width, "height": height},
            base_url=server.url)
        self.context.set_default_timeout(TIMEOUT)
        self.page = self.context.new_page()
        self.errors = []
        #: substrings of console errors a test expects (each once)
        self.expected = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(
            "page error: %s" % exc))

    def _console(self, message):
        if message.type != "error":
            return
        for index, text in enumerate(self.expected):
            if text in message.text:
                del self.expected[index]
                return
        self.errors.append("console error: %s (%s)" % (
            message.text, message.location.get("url", "")))

    def login(self, username="admin", password=ADMIN_PASSWORD, path="/"):
        """Log in with the API (sets the cookie) and open ``path``."""
        response = self.context.request.post(
            self.server.url + API + "/login",
            data={"username": username, "password": password})
        assert response.ok, response.text()
        self.page.goto(path)
        return self.page

    def shot(self, name):
        """Save a full-page screenshot ``<name>.png`` as an artefact."""
        os.makedirs(ARTEFACTS, exist_ok=True)
        self.page.screenshot(path=os.path.join(ARTEFACTS, name + ".png"),
                             full_page=True)

    def close(self):
        self.context.close()


@pytest.fixture
def browse(chromium, dash, dash_worker):
    """Open browser sessions (``browse()``, ``browse(width=390, ...)``);
    each must end without console errors."""
    sessions = []

    def open_session(**kwargs):
        session = Session(chromium, dash, **kwargs)
        sessions.append(session)
        return session
    yield open_session
    errors = []
    for session in sessions:
        errors.extend(session.errors)
        session.close()
    assert not errors, "\n".join(errors)
