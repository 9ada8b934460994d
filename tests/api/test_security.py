"""Security of the app server (issue 13, parts 1-3) over real HTTP:

* ``POST /job`` never imports the module a user names into the app server
  (a module with an import-time effect shows it), resolves names against
  the registry ``sys_job`` and answers unknown names 404;
* failed logins are throttled per (user, address) and per address, with
  429 and ``Retry-After``, logged and emitted as events;
* the login cookie is ``Secure`` behind a trusted TLS proxy only, and
  unsafe requests made with it need a same-origin ``Origin``/``Referer``
  (HTTP requests and a cross-site form post in headless Chromium).

Most tests use the package's app server (``api``, default configuration,
no trusted proxy); those that need small throttle limits, a trusted proxy
(to send from other addresses with ``X-Forwarded-For``) or strict settings
use ``sec``, a second app server with its own database and configuration.
"""

import http.server
import os
import threading
import time

import pytest
import requests
import yaml

from tests.api.conftest import ADMIN_PASSWORD, API, unique
from tests.apijobs.client import DUMMY, DUMMY_NAME, GATE, NOOP, error
from tests.appserver import start_app_server, stop_app_server

#: a job module with an effect at import (never imported here either)
SIDE = "tests.api.sideeffect_job"
#: the file in the core4 home its imports append their process ids to
MARKER = "sideeffect-imported"
#: the configuration of ``sec``
SEC_CONFIG = {"api": {
    "trusted_proxies": ["127.0.0.1"],
    "enqueue_unregistered": False,
    "throttle": {"attempts": 3, "address_attempts": 8, "lock": 2,
                 "max_lock": 4, "window": 60, "delay": 0},
    "csrf": {"origins": ["https://app.example.com"],
             "require_origin": True}}}


@pytest.fixture(scope="module")
def sec(api_env):
    """An app server with small throttle limits, 127.0.0.1 as trusted
    proxy, strict CSRF settings and only registered jobs enqueueable."""
    path = os.path.join(api_env["base"], "sec.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(SEC_CONFIG, handle)
    server = start_app_server(api_env, "sec%d" % os.getpid(), "sec",
                              CORE4_CONFIG=path)
    yield server
    stop_app_server(server, drop=True)


def login(server, name, password, address=None, session=None, **headers):
    """POST /login (from ``address``, told by the trusted proxy)."""
    if address:
        headers["X-Forwarded-For"] = address
    send = session.post if session is not None else requests.post
    return send(server.url + API + "/login", json={
        "username": name, "password": password}, headers=headers, timeout=30)


def basic(server, name, password, address=None):
    """GET /profile with HTTP Basic (from ``address``)."""
    headers = {"X-Forwarded-For": address} if address else {}
    return server.request("GET", API + "/profile", auth=(name, password),
                          headers=headers)


def no_traceback(server):
    """The app server logged no traceback."""
    assert "Traceback" not in server.output()


# part 1: no import of a user-chosen module -----------------------------------

def test_post_job_never_imports_the_named_module(api, api_env):
    marker = os.path.join(api_env["home"], MARKER)
    # a module of the standard library with an effect at import
    error(api.request("POST", API + "/job", token=api.admin,
                      json={"qual_name": "this.Foo"}), 404,
          "job this.Foo", "module this has no class Foo")
    assert "Beautiful is better than ugly" not in api.output()
    for name, words in [
            (SIDE + ".NoSuchJob", ["has no class NoSuchJob"]),
            ("sys.Foo", ["built into Python"]),
            ("no_such_module_core4.x.Job", ["module no_such_module_core4 "
                                            "not found"])]:
        error(api.request("POST", API + "/job", token=api.admin,
                          json={"qual_name": name}), 404, name, *words)
    assert not os.path.exists(marker), "the module was imported"
    # an unregistered job is validated in a child process: its module runs
    # there, never in the app server
    response = api.request("POST", API + "/job", token=api.admin, json={
        "qual_name": SIDE + ".SideEffectJob", "args": {"tag": unique()}})
    assert response.status_code == 201, response.text
    job = response.json()["data"]
    assert job["name"] == SIDE + ".SideEffectJob"
    assert job["state"] == "pending"
    with open(marker) as handle:
        pids = {int(line) for line in handle.read().split()}
    assert pids and api.process.pid not in pids
    api.request("DELETE", API + "/job/%s" % job["_id"], token=api.admin)
    no_traceback(api)


def test_only_registered_jobs_when_so_configured(sec):
    error(sec.request("POST", API + "/job", token=sec.admin,
                      json={"qual_name": GATE}), 404, GATE, "not registered")
    error(sec.request("POST", API + "/job", token=sec.admin,
                      json={"qual_name": NOOP}), 404, NOOP)
    sec.db.sys_job.insert_many([
        {"_id": NOOP, "name": NOOP, "project": "core4", "valid": True},
        {"_id": DUMMY_NAME, "name": DUMMY_NAME, "project": "core4",
         "valid": True},
        {"_id": GATE, "name": GATE, "project": "tests", "valid": False,
         "exception": "not found"}])
    for name, stored in [(NOOP, NOOP), (DUMMY, DUMMY_NAME)]:
        response = sec.request("POST", API + "/job", token=sec.admin, json={
            "qual_name": name, "args": {"tag": unique()}})
        assert response.status_code == 201, response.text
        assert response.json()["data"]["name"] == stored
    # registered, but not valid: as unknown
    error(sec.request("POST", API + "/job", token=sec.admin,
                      json={"qual_name": GATE}), 404, GATE, "not registered")
    no_traceback(sec)


# part 2: login throttling ----------------------------------------------------

def test_failed_logins_lock_a_user_at_that_address_only(sec):
    name, _ = sec.create_user([])
    here, there = "10.1.0.1", "10.1.0.2"
    for _ in range(3):
        error(login(sec, name, "wrong-password", here), 401,
              "wrong username or password")
    # locked at this address, even with the right password and Basic
    for response in (login(sec, name, "password-1", here),
                     basic(sec, name, "password-1", here)):
        message = error(response, 429, "too many failed logins", name, here)
        assert 1 <= int(response.headers["Retry-After"]) <= 2, message
    # not from elsewhere: an attacker cannot lock a user out
    assert login(sec, name, "password-1", there).status_code == 200
    assert basic(sec, name, "password-1", there).status_code == 200
    time.sleep(2.2)
    assert login(sec, name, "password-1", here).status_code == 200
    # after a lock, each further failure doubles it (up to max_lock)
    for _ in range(3):
        assert login(sec, name, "wrong", here).status_code == 401
    wait = int(login(sec, name, "wrong", here).headers["Retry-After"])
    time.sleep(wait + 0.2)
    assert login(sec, name, "wrong", here).status_code == 401
    response = login(sec, name, "password-1", here)
    error(response, 429, name)
    assert int(response.headers["Retry-After"]) >= 3
    # logged in one line each, and emitted as events
    output = sec.output()
    assert "login locked for 2 s: user %s from %s (password)" % (
        name, here) in output
    assert "login of %s from %s (password)" % (name, there) in output
    events = list(sec.db.sys_event.find({"channel": "auth",
                                         "data.user": name}))
    names = [(doc["name"], doc["data"]["address"]) for doc in events]
    assert ("login_locked", here) in names and ("login", there) in names
    no_traceback(sec)


def test_failed_logins_from_one_address_lock_it(sec):
    address, other = "10.2.0.1", "10.2.0.2"
    name, _ = sec.create_user([])
    for _ in range(8):  # eight users that do not exist, once each
        assert login(sec, unique("nobody"), "wrong-password",
                     address).status_code == 401
    response = login(sec, name, "password-1", address)
    message = error(response, 429, "too many failed logins from %s"
                    % address)
    assert name not in message
    assert login(sec, name, "password-1", other).status_code == 200
    assert "login locked for 2 s: every user from %s" % address \
        in sec.output()


def test_forwarded_headers_need_a_trusted_proxy(api):
    name, _ = api.create_user([])
    for n in range(5):  # a client that claims another address each time
        response = api.request("GET", API + "/profile", auth=(name, "wrong"),
                               headers={"X-Forwarded-For": "10.9.0.%d" % n,
                                        "X-Real-Ip": "10.8.0.%d" % n})
        assert response.status_code == 401
    response = login(api, name, "password-1", "10.9.1.1")
    error(response, 429, "too many failed logins for %s from 127.0.0.1"
          % name)
    # no Secure cookie on a claim of TLS by anybody
    response = login(api, "admin", ADMIN_PASSWORD,
                     **{"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert "secure" not in response.headers["Set-Cookie"].lower()


# part 3: the cookie and cross-site requests ----------------------------------

def test_cookie_is_secure_behind_a_trusted_tls_proxy(sec):
    name, _ = sec.create_user([])
    plain = login(sec, name, "password-1")
    assert plain.status_code == 200
    assert "secure" not in plain.headers["Set-Cookie"].lower()
    tls = login(sec, name, "password-1", **{"X-Forwarded-Proto": "https"})
    header = tls.headers["Set-Cookie"]
    assert "Secure" in header and "HttpOnly" in header
    assert "SameSite=Strict" in header


def cookie_session(server):
    """A ``requests`` session logged in as admin by the cookie."""
    session = requests.Session()
    assert login(server, "admin", ADMIN_PASSWORD,
                 session=session).status_code == 200
    return session


def test_cookie_requests_from_another_origin_are_refused(api):
    session = cookie_session(api)
    tag = unique()
    body = {"qual_name": NOOP, "args": {"tag": tag}}
    job_url = api.url + API + "/job"
    for headers, words in [
            ({"Origin": "http://evil.example"},
             ["cross-site request refused", "POST", "http://evil.example"]),
            ({"Referer": "http://evil.example/page?x=1"},
             ["Referer http://evil.example/page"]),
            ({"Origin": "null"}, ["Origin null"]),
            # same site, another origin (port)
            ({"Origin": "http://127.0.0.1:1"}, ["http://127.0.0.1:1"]),
            ({"Origin": "https://" + api.url.split("//")[1]}, ["https://"])]:
        error(session.post(job_url, json=body, headers=headers, timeout=30),
              403, *words)
    error(session.put(api.url + API + "/profile", json={
        "password": "x", "new_password": "y"},
        headers={"Origin": "http://evil.example"}, timeout=30), 403)
    assert api.db.sys_queue.count_documents({"args.tag": tag}) == 0
    # the same origin works, and so does a client that sends neither header
    # (a job that stays pending: the package's worker must not end it
    # before the DELETE below)
    response = session.post(job_url, timeout=30, headers={
        "Origin": api.url}, json={"qual_name": "tests.apijobs.ParkedJob",
                                  "args": {"tag": tag}})
    assert response.status_code == 201, response.text
    _id = response.json()["data"]["_id"]
    assert session.delete(job_url + "/" + _id, timeout=30,
                          headers={"Referer": api.url + "/#/job"}
                          ).status_code == 200
    # Bearer and Basic are not affected (a browser never adds them)
    evil = {"Origin": "http://evil.example"}
    for kwargs in ({"token": api.admin}, {"auth": ("admin", ADMIN_PASSWORD)}):
        error(api.request("POST", API + "/job", json={"qual_name": "x"},
                          headers=evil, **kwargs), 400, "qualified job name")
    error(session.post(job_url, json={"qual_name": "x"}, timeout=30), 400)
    no_traceback(api)


def test_strict_origin_settings(sec):
    session = cookie_session(sec)
    url = sec.url + API + "/job"
    error(session.post(url, json={"qual_name": "x"}, timeout=30), 403,
          "needs an Origin or Referer header")
    host = sec.url.split("//")[1]
    for headers in ({"Origin": "https://app.example.com"},
                    {"Origin": "https://" + host,
                     "X-Forwarded-Proto": "https"},
                    {"Origin": "http://other.example",
                     "X-Forwarded-Host": "other.example"}):
        error(session.post(url, json={"qual_name": "x"}, headers=headers,
                           timeout=30), 400, "qualified job name")


# a cross-site form post in headless Chromium ---------------------------------

@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium (Playwright), as the dashboard tests run it."""
    from playwright.sync_api import sync_playwright
    from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS
    if not os.path.exists(CHROMIUM):
        pytest.skip("%s is missing (scripts/system-deps)" % CHROMIUM)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


FORM = """<!doctype html><html><body>
<form method="POST" action="%s">
<input name="qual_name" value="%s"><input name="args" value='%s'>
</form><script>document.forms[0].submit()</script></body></html>"""


@pytest.fixture
def attacker():
    """A site on another origin (same host, another port) that serves
    the page at ``/`` it is given: ``attacker(html)`` returns its url."""
    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get("page", "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html):
        pages["page"] = html
        return "http://127.0.0.1:%d/" % server.server_address[1]
    yield serve
    server.shutdown()
    server.server_close()


def test_cross_site_form_post_in_a_browser_is_refused(api, chromium,
                                                      attacker):
    context = chromium.new_context()
    try:
        assert context.request.post(api.url + API + "/login", data={
            "username": "admin", "password": ADMIN_PASSWORD}).ok
        page = context.new_page()
        tag = unique()
        target = api.url + API + "/job"
        url = attacker(FORM % (target, NOOP, '{"tag": "%s"}' % tag))
        # the form of another origin posts with the (same-site) cookie
        with page.expect_response(target) as info:
            page.goto(url)
        response = info.value
        assert response.request.all_headers().get("origin") == url.rstrip("/")
        assert response.status == 403
        body = response.json()
        assert body["code"] == 403
        assert "cross-site request refused" in body["message"]
        assert api.db.sys_queue.count_documents({"args.tag": tag}) == 0
        # the same form on the server's own origin enqueues
        page.goto(api.url + API + "/openapi.json")
        with page.expect_response(target) as info:
            page.evaluate("""([action, name, args]) => {
                document.body.innerHTML = `<form method="POST"
                  action="${action}"><input name="qual_name" value="${name}">
                  <input name="args"></form>`;
                document.forms[0].elements.args.value = args;
                document.forms[0].submit();
            }""", [target, NOOP, '{"tag": "%s"}' % tag])
        response = info.value
        assert response.status == 201, response.text()
        _id = response.json()["data"]["_id"]
        api.request("DELETE", API + "/job/%s" % _id, token=api.admin)
    finally:
        context.close()
    no_traceback(api)
