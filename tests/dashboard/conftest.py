"""Fixtures of the dashboard tests: one real app server (``coco
--application``, dashboard at ``/``) and one real worker on a database of
their own, the registered job classes, and headless Chromium (Debian's
``/usr/bin/chromium``) driven by Playwright.

Every test gets a fresh browser context whose console errors and uncaught
page errors fail the test. Screenshots go to ``$CORE4_TEST_ARTEFACTS``
(default ``<repo>/test-artefacts/dashboard``).
"""

import os
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.appserver import (ADMIN_PASSWORD, API, isolated_env,
                             start_app_server, stop_app_server, worker_for)
from tests.support import ROOT

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
    with isolated_env(servers, "dash") as env:
        yield env


@pytest.fixture(scope="package")
def dash(dash_env):
    """The package's app server with the registered job classes."""
    server = start_app_server(dash_env, ready="/")
    # the registry (GET /job/list) as the scheduler would fill it
    subprocess.run([sys.executable, "-m", "core4.script.coco", "--jobs",
                    "--introspect"], env=server.env, cwd=ROOT, check=True,
                   capture_output=True, timeout=60)
    yield server
    stop_app_server(server)


@pytest.fixture(scope="package")
def dash_worker(dash, dash_env):
    """A real worker on the app server's database."""
    with worker_for(dash, "dashworker", dash_env["base"]) as worker:
        yield worker


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
