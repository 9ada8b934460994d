"""Authentication and access over real HTTP.

The module runs its own app server (``auth_api``) on a fresh database,
started without ``api.admin_password``: it generates the secrets and the
admin user (with a generated password printed once) at first start, and
has no worker, so the jobs enqueued here stay pending. Its token settings
are small (see :data:`TOKEN`) to show they are honoured.

The auth matrix is derived from ``CoreApiServer.rules``: a new route is
covered automatically (and a new public or user-access route fails until
its expected answer is written down below).
"""

import base64
import json
import os
import re
import shutil
import tempfile
import time

import jwt
import pytest
import requests
import tornado.web
from bson import ObjectId

from core4.api.auth import COOKIE
from core4.api.v1 import spec
from core4.api.v1.container import CoreApiServer
from core4.api.v1.openapi import implemented, path_of
from core4.config import get_config
from tests.appserver import (ADMIN_PASSWORD, API, start_app_server,
                             stop_app_server, unique)
from tests.support import wait_for

DUMMY = "core4.queue.helper.job.DummyJob"
#: the name DUMMY is stored with
DUMMY_NAME = "core4.queue.helper.job.example.DummyJob"
OTHER = "core4.queue.helper.job.example.NoopJob"
#: token settings of ``auth_api`` (seconds)
TOKEN = {"expiration": 600, "refresh": 60}
GENERATED = re.compile(r"created user admin with password (\S+)")


@pytest.fixture(scope="module")
def auth_api(api_env):
    """An app server on a fresh database without a configured admin
    password; ``auth_api.admin_password`` is the generated one."""
    server = start_app_server(
        api_env, "auth%d" % os.getpid(), "auth",
        CORE4_OPTION_api__admin_password=None,
        CORE4_OPTION_api__token__expiration="!!int %d" % TOKEN["expiration"],
        CORE4_OPTION_api__token__refresh="!!int %d" % TOKEN["refresh"])
    found = wait_for(lambda: GENERATED.search(server.output()), 10,
                     message="the generated admin password")
    server.admin_password = found.group(1)
    server._admin = server.login("admin", server.admin_password)
    yield server
    stop_app_server(server, drop=True)


def secret(server, name="jwt"):
    """The secret ``name`` of ``server`` (from its home's secrets file)."""
    from core4.private import SECRET_FILE, read_secrets
    return read_secrets(os.path.join(
        server.env["CORE4_OPTION_folder__home"], SECRET_FILE))[name]


def make_token(server, name, secret_value=None, algorithm="HS256", **claims):
    """A JWT for user ``name`` signed like ``server`` signs them, with
    ``claims`` replacing the defaults."""
    user = server.db.sys_role.find_one({"name": name}) or {}
    at = int(time.time())
    payload = {"sub": name, "iat": at, "exp": at + 300,
               "ver": user.get("token_version", 0)}
    payload.update(claims)
    return jwt.encode(payload, secret(server) if secret_value is None
                      else secret_value, algorithm=algorithm)


def basic(name, password):
    """An Authorization header of HTTP Basic."""
    text = base64.b64encode(("%s:%s" % (name, password)).encode()).decode()
    return {"Authorization": "Basic " + text}


# the auth matrix ------------------------------------------------------------

def routes():
    """``[(METHOD, rule pattern, handler, url pattern)]`` of every route
    and implemented method of CoreApiServer."""
    result = []
    rules = {CoreApiServer.root + rule[0]: rule[0]
             for rule in CoreApiServer.rules}
    for pattern, handler, _ in CoreApiServer.routes(get_config()):
        params = spec.path_parameters(pattern)
        path = path_of(pattern, [p["name"] for p in params])
        for method in implemented(handler):
            result.append((method.upper(), rules[pattern], handler, path))
    return result


def url(path, _id):
    """``path`` with every path parameter set to ``_id``."""
    return re.sub(r"\{[^}]*\}", str(_id), path)


#: bodies sent in the matrix (else none)
BODIES = {("POST", "/job"): {"qual_name": DUMMY, "args": {}}}
#: public routes without (valid) credentials
PUBLIC = {("POST", "/login"): 400, ("GET", "/login"): 401,
          ("POST", "/logout"): 200, ("GET", "/openapi.json"): 200}
#: routes open to every user, for a user without permissions, with the id
#: of a job the user may not read
USER = {("GET", "/profile"): 200, ("PUT", "/profile"): 400,
        ("GET", "/job"): 200, ("POST", "/job"): 403,
        ("GET", "/job/list"): 200, ("GET", r"/job/%s" % spec.ID): 403,
        ("DELETE", r"/job/%s" % spec.ID): 403,
        ("GET", r"/job/%s/log" % spec.ID): 403,
        ("GET", r"/job/%s/stdout" % spec.ID): 403,
        ("GET", r"/job/%s/follow" % spec.ID): 403,
        ("PUT", r"/job/%s/kill" % spec.ID): 403,
        ("PUT", r"/job/%s/restart" % spec.ID): 403,
        ("GET", "/queue"): 200, ("GET", "/queue/history"): 200,
        ("GET", "/system"): 200, ("GET", "/service"): 200,
        ("DELETE", r"/service/%s" % spec.ID): 403}


def call_all(server, _id, **kwargs):
    """Call every route once; return ``[(METHOD, rule, handler,
    response)]``."""
    result = []
    for method, rule, handler, path in routes():
        response = server.request(method, url(path, _id), json=BODIES.get(
            (method, rule)), **kwargs)
        result.append((method, rule, handler, response))
    return result


def check_all(results, expect):
    """Assert ``expect(method, rule, handler, response)`` (True or a
    message) for every result; report all mismatches at once."""
    wrong = []
    for method, rule, handler, response in results:
        verdict = expect(method, rule, handler, response)
        if verdict is not True:
            wrong.append("%s %s: %s %s (%s)" % (
                method, rule, response.status_code,
                response.text[:120], verdict))
    assert not wrong, "\n".join(wrong)


def refused(method, rule, handler, response):
    """A non-public route answers 401 in the envelope; a public one as
    without credentials."""
    if handler.public:
        expected = PUBLIC[(method, rule)]
        return response.status_code == expected or "want %d" % expected
    if response.status_code != 401:
        return "want 401"
    body = response.json()
    if body["code"] != 401 or body["message"] != "login required":
        return "want the envelope"
    return ("Bearer" in response.headers.get("WWW-Authenticate", "")
            or "want WWW-Authenticate")


@pytest.fixture(scope="module")
def pending_job(auth_api):
    """The id of a pending DummyJob (no worker runs on ``auth_api``)."""
    response = auth_api.request("POST", API + "/job", token=auth_api.admin,
                                json={"qual_name": DUMMY,
                                      "args": {"tag": unique()}})
    assert response.status_code == 201, response.text
    return response.json()["data"]["_id"]


def test_every_public_and_user_route_has_an_expectation():
    found = {(m, r) for m, r, h, _ in routes() if h.public}
    assert found == set(PUBLIC)
    found = {(m, r) for m, r, h, _ in routes()
             if not h.public and h.access == "user"}
    assert found == set(USER)


def test_no_credentials_is_401(auth_api, pending_job):
    check_all(call_all(auth_api, pending_job), refused)


def test_without_credentials_the_body_is_not_read(auth_api):
    response = auth_api.request("POST", API + "/roles", data=b"{not json",
                                headers={"Content-Type": "application/json"})
    assert response.status_code == 401


def throttled(method, rule, handler, response):
    """A login refused for too many failures: 429 with Retry-After."""
    if response.status_code != 429:
        return "want 429"
    return ("too many failed logins" in response.json()["message"]
            and int(response.headers["Retry-After"]) > 0
            or "want the message and Retry-After")


def test_wrong_password_is_401(auth_api, pending_job):
    # a name of its own: from the fifth failure on, it is locked at this
    # address (api.throttle, see test_security.py)
    results = call_all(auth_api, pending_job, headers=basic(
        unique("nobody"), "password-1x"))
    # public routes (but GET /login) ignore HTTP Basic: no password is
    # checked there, no failure counted
    checked = [result for result in results if not result[2].public
               or result[:2] == ("GET", "/login")]
    check_all([result for result in results if result not in checked],
              refused)
    check_all(checked[:5], refused)
    check_all(checked[5:], throttled)
    response = auth_api.request("POST", API + "/login", json={
        "username": "admin", "password": auth_api.admin_password + "x"})
    assert response.status_code == 401
    assert response.json()["message"] == "wrong username or password"
    assert "Token" not in response.headers and not response.cookies


def _tampered_signature(token):
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return ".".join([head, payload, signature[:middle] + flipped
                     + signature[middle + 1:]])


def _tampered_payload(token, **claims):
    head, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data.update(claims)
    text = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    return ".".join([head, text.rstrip("="), signature])


BAD_TOKENS = {
    "expired": lambda s: make_token(s, "admin", iat=int(time.time()) - 900,
                                    exp=int(time.time()) - 10),
    "tampered signature": lambda s: _tampered_signature(s.admin),
    "tampered payload": lambda s: _tampered_payload(
        make_token(s, s.create_user([])[0]), sub="admin"),
    "other secret": lambda s: make_token(s, "admin", "0" * 64),
    "alg none": lambda s: make_token(s, "admin", "", algorithm="none"),
    "other algorithm": lambda s: make_token(s, "admin", algorithm="HS512"),
    "old token version": lambda s: make_token(s, "admin", ver=-1),
    "no such user": lambda s: make_token(s, "nobody" + unique()),
    "not a token": lambda s: "not-a-jwt",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_invalid_token_is_401(auth_api, pending_job, kind):
    token = BAD_TOKENS[kind](auth_api)
    check_all(call_all(auth_api, pending_job, token=token), refused)
    cookie = tornado.web.create_signed_value(
        secret(auth_api, "cookie"), COOKIE, token).decode()
    response = auth_api.request("GET", API + "/profile",
                                cookies={COOKIE: cookie})
    assert response.status_code == 401


def test_a_valid_token_of_the_same_making_is_accepted(auth_api):
    """The control of the invalid tokens: made the same way, but valid."""
    response = auth_api.request("GET", API + "/profile",
                                token=make_token(auth_api, "admin"))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["name"] == "admin"


def _not_refused(method, rule, handler, response):
    if response.status_code in (401, 403) or response.status_code >= 500:
        return "want no 401/403/5xx"
    return True


@pytest.mark.parametrize("via", ["bearer", "basic", "cookie"])
def test_admin_may_call_every_route(auth_api, via):
    # a nonexistent id: nothing is changed, the answer is 404, not 401/403
    missing = ObjectId()
    if via == "bearer":
        results = call_all(auth_api, missing, token=auth_api.admin)
    elif via == "basic":
        results = call_all(auth_api, missing, headers=basic(
            "admin", auth_api.admin_password))
    else:
        session = requests.Session()
        response = session.post(auth_api.url + API + "/login", json={
            "username": "admin", "password": auth_api.admin_password})
        assert response.status_code == 200
        results = call_all(auth_api, missing,
                           cookies=session.cookies.get_dict())
    check_all(results, _not_refused)
    answers = {(m, r): resp.status_code for m, r, _, resp in results}
    assert answers[("GET", "/roles")] == 200
    assert answers[("GET", r"/job/%s" % spec.ID)] == 404


def test_user_without_permissions(auth_api, pending_job):
    _, token = auth_api.create_user([])

    def expect(method, rule, handler, response):
        if handler.public:
            wanted = 200 if (method, rule) == ("GET", "/login") else PUBLIC[
                (method, rule)]
        elif handler.access == "user":
            wanted = USER[(method, rule)]
        else:  # admin and api:// handlers
            wanted = 403
        return response.status_code == wanted or "want %d" % wanted
    results = call_all(auth_api, pending_job, token=token)
    check_all(results, expect)
    answers = {(m, r): resp for m, r, _, resp in results}
    assert "not permitted" in answers[("GET", "/roles")].json()["message"]


# other users' jobs ------------------------------------------------------------

def test_other_users_job_is_refused_and_masked(auth_api, pending_job):
    name, token = auth_api.create_user(["job://%s/r" % re.escape(OTHER)])
    for method, suffix in [("GET", ""), ("GET", "/log"), ("GET", "/stdout"),
                           ("GET", "/follow"), ("PUT", "/kill"),
                           ("PUT", "/restart"), ("DELETE", "")]:
        response = auth_api.request(method, API + "/job/%s%s" % (
            pending_job, suffix), token=token)
        assert response.status_code == 403, (method, suffix, response.text)
        assert name in response.json()["message"]
    listing = auth_api.request("GET", API + "/job", token=token,
                               params={"per_page": 1000}).json()["data"]
    mine = [doc for doc in listing if doc["_id"] == pending_job]
    assert mine == [{"_id": pending_job, "name": "UnauthorizedJob",
                     "state": "pending", "masked": True, "args": None}]
    queue = auth_api.request("GET", API + "/queue", token=token).json()
    names = {entry["name"] for entry in queue["data"]["name"]}
    assert "UnauthorizedJob" in names and DUMMY_NAME not in names
    assert auth_api.request("GET", API + "/job/" + pending_job, token=auth_api
                            .admin).json()["data"]["state"] == "pending"


def test_read_permission_reads_but_does_not_execute(auth_api, pending_job):
    _, token = auth_api.create_user(["job://core4\\.queue\\.helper\\./r"])
    response = auth_api.request("GET", API + "/job/" + pending_job,
                                token=token)
    assert response.status_code == 200
    assert response.json()["data"]["name"] == DUMMY_NAME
    listing = auth_api.request("GET", API + "/job", token=token,
                               params={"per_page": 1000}).json()["data"]
    assert [d["name"] for d in listing
            if d["_id"] == pending_job] == [DUMMY_NAME]
    for method, suffix in [("PUT", "/kill"), ("DELETE", "")]:
        response = auth_api.request(method, API + "/job/%s%s" % (
            pending_job, suffix), token=token)
        assert response.status_code == 403
    # patterns match from the start of the name only
    _, token = auth_api.create_user(["job://helper/x"])
    assert auth_api.request("GET", API + "/job/" + pending_job,
                            token=token).status_code == 403


def test_execute_permission_kills(auth_api):
    _, token = auth_api.create_user(["job://core4\\.queue\\.helper\\..*/x"])
    response = auth_api.request("POST", API + "/job", token=token, json={
        "qual_name": DUMMY, "args": {"tag": unique()}})
    assert response.status_code == 201, response.text
    _id = response.json()["data"]["_id"]
    response = auth_api.request("PUT", API + "/job/%s/kill" % _id,
                                token=token)
    assert response.status_code == 200, response.text


# login, cookie, tokens ---------------------------------------------------------

def test_cookie_login_and_logout(auth_api):
    name, _ = auth_api.create_user([])
    session = requests.Session()
    response = session.post(auth_api.url + API + "/login", json={
        "username": name, "password": "password-1"})
    assert response.status_code == 200
    header = response.headers["Set-Cookie"]
    assert header.startswith(COOKIE + "=")
    assert "HttpOnly" in header and "SameSite=Strict" in header
    assert set(session.cookies.get_dict()) == {COOKIE}
    response = session.get(auth_api.url + API + "/profile")
    assert response.status_code == 200
    assert response.json()["data"]["name"] == name
    response = session.post(auth_api.url + API + "/logout")
    assert response.status_code == 200
    assert session.cookies.get_dict() == {}
    assert session.get(auth_api.url + API + "/profile").status_code == 401
    # a forged cookie (not signed with the cookie secret) is nobody
    forged = tornado.web.create_signed_value(
        "0" * 64, COOKIE, make_token(auth_api, name)).decode()
    response = auth_api.request("GET", API + "/profile",
                                cookies={COOKIE: forged})
    assert response.status_code == 401


def test_login_token_follows_the_configuration(auth_api):
    before = int(time.time())
    response = auth_api.request("POST", API + "/login", json={
        "username": "admin", "password": auth_api.admin_password})
    data = response.json()["data"]
    payload = jwt.decode(data["token"], secret(auth_api),
                         algorithms=["HS256"])
    assert payload["sub"] == "admin"
    assert payload["exp"] - payload["iat"] == TOKEN["expiration"]
    assert before <= payload["iat"] <= time.time()
    assert data["expires"] == payload["exp"]


def test_token_refresh(auth_api):
    name, _ = auth_api.create_user([])
    young = make_token(auth_api, name,
                       iat=int(time.time()) - TOKEN["refresh"] // 2)
    response = auth_api.request("GET", API + "/profile", token=young)
    assert response.status_code == 200
    assert "Token" not in response.headers
    old = make_token(auth_api, name,
                     iat=int(time.time()) - TOKEN["refresh"] - 1)
    response = auth_api.request("GET", API + "/profile", token=old)
    assert response.status_code == 200
    fresh = response.headers["Token"]
    payload = jwt.decode(fresh, secret(auth_api), algorithms=["HS256"])
    assert payload["sub"] == name
    assert time.time() - payload["iat"] < TOKEN["refresh"]
    response = auth_api.request("GET", API + "/profile", token=fresh)
    assert response.status_code == 200 and "Token" not in response.headers
    # a cookie with an old token is replaced by a cookie with a fresh one
    cookie = tornado.web.create_signed_value(
        secret(auth_api, "cookie"), COOKIE, old).decode()
    response = auth_api.request("GET", API + "/profile",
                                cookies={COOKIE: cookie})
    assert response.status_code == 200
    assert response.cookies.get(COOKIE)
    assert response.cookies[COOKIE] != cookie


def test_password_change_invalidates_older_tokens(auth_api):
    name, first = auth_api.create_user([], password="password-1")
    second = auth_api.login(name, "password-1")
    response = auth_api.request("PUT", API + "/profile", token=first, json={
        "password": "wrong-password", "new_password": "password-2"})
    assert response.status_code == 400
    assert "current password is wrong" in response.json()["message"]
    response = auth_api.request("PUT", API + "/profile", token=first, json={
        "password": "password-1", "new_password": "short"})
    assert response.status_code == 400
    response = auth_api.request("PUT", API + "/profile", token=first, json={
        "password": "password-1", "new_password": "password-2"})
    assert response.status_code == 200, response.text
    new = response.json()["data"]["token"]
    for old in (first, second):
        response = auth_api.request("GET", API + "/profile", token=old)
        assert response.status_code == 401
    response = auth_api.request("GET", API + "/profile", token=new)
    assert response.status_code == 200
    assert auth_api.request("GET", API + "/profile", headers=basic(
        name, "password-1")).status_code == 401
    assert auth_api.request("GET", API + "/profile", headers=basic(
        name, "password-2")).status_code == 200


def test_inactive_user_cannot_log_in(auth_api):
    name = unique("inactive")
    response = auth_api.request("POST", API + "/roles", token=auth_api.admin,
                                json={"name": name, "email": name + "@x.org",
                                      "password": "password-1",
                                      "is_active": False})
    assert response.status_code == 201, response.text
    response = auth_api.request("POST", API + "/login", json={
        "username": name, "password": "password-1"})
    assert response.status_code == 401
    assert auth_api.request("GET", API + "/profile", headers=basic(
        name, "password-1")).status_code == 401
    # deactivating a user ends its tokens
    name, token = auth_api.create_user([])
    doc = auth_api.db.sys_role.find_one({"name": name})
    response = auth_api.request("PUT", API + "/roles/%s" % doc["_id"],
                                token=auth_api.admin, json={
                                    "is_active": False, "etag": doc["etag"]})
    assert response.status_code == 200, response.text
    response = auth_api.request("GET", API + "/profile", token=token)
    assert response.status_code == 401


def test_username_matches_exactly(auth_api):
    name, _ = auth_api.create_user([])
    assert auth_api.login(name, "password-1")
    for wrong in [name.upper(), name + ".*", name[:-1] + ".", "^" + name,
                  name[:-1], name + " ", name + "\n"]:
        response = auth_api.request("POST", API + "/login", json={
            "username": wrong, "password": "password-1"})
        assert response.status_code == 401, wrong
        assert auth_api.request("GET", API + "/profile", headers=basic(
            wrong, "password-1")).status_code == 401, wrong
    response = auth_api.request("POST", API + "/login", json={
        "username": {"$regex": name[:3]}, "password": "password-1"})
    assert response.status_code == 400
    assert "username" in response.json()["message"]


# secrets and the admin --------------------------------------------------------

def test_admin_created_at_first_start_with_generated_password(
        auth_api, api_env):
    password = auth_api.admin_password
    assert len(password) >= 12
    assert auth_api.output().count(password) == 1
    response = auth_api.request("GET", API + "/profile", headers=basic(
        "admin", password))
    assert response.status_code == 200
    assert "cop" in response.json()["data"]["effective_permissions"]
    # a second start on the same database creates and prints nothing
    again = start_app_server(api_env, auth_api.db.name, "authagain",
                         CORE4_OPTION_api__admin_password=None)
    try:
        assert "created user" not in again.output()
        assert again.login("admin", password)
    finally:
        stop_app_server(again)
    assert auth_api.db.sys_role.count_documents({"name": "admin"}) == 1


def _assert_never_in_clear(server, password):
    for doc in server.db.sys_role.find({}):
        assert password not in json.dumps(doc, default=str)
        if doc.get("email"):
            assert doc["password"].startswith("$argon2id$")
    for doc in server.db.sys_log.find({}):
        assert password not in json.dumps(doc, default=str)


def test_admin_password_never_stored_or_logged(auth_api, api):
    marker = "wrong-" + unique()
    # passwords sent where they should not be are not logged either
    for server in (auth_api, api):
        for method, path in [("POST", "/login"), ("PUT", "/profile")]:
            response = server.request(method, API + path, params={
                "username": "admin", "password": marker,
                "new_password": marker})
            assert response.status_code in (400, 401)
        server.request("GET", API + "/profile", headers=basic(
            "admin", marker))
    _assert_never_in_clear(auth_api, auth_api.admin_password)
    _assert_never_in_clear(auth_api, marker)
    assert marker not in auth_api.output()
    _assert_never_in_clear(api, ADMIN_PASSWORD)
    _assert_never_in_clear(api, marker)
    assert ADMIN_PASSWORD not in api.output()
    assert marker not in api.output()


def test_secrets_generated_at_first_start(auth_api, api, api_env):
    # both servers of this package share one home: a server of another
    # home (another deployment) generates its own secrets
    other_home = tempfile.mkdtemp(prefix="core4-secrets-")
    other = start_app_server(api_env, name="other",
                             CORE4_OPTION_folder__home=other_home)
    try:
        docs = {name: secret(other, name) for name in ("jwt", "cookie")}
        assert all(re.fullmatch("[0-9a-f]{64}", value)
                   for value in docs.values())
        assert docs["jwt"] != docs["cookie"]
        mode = os.stat(os.path.join(other_home, "secrets.json")).st_mode
        assert mode & 0o077 == 0
        assert not set(docs.values()) & {secret(api, "jwt"),
                                         secret(api, "cookie")}
        # none of them in the database
        assert other.db.sys_secret.count_documents(
            {"_id": {"$in": ["jwt", "cookie"]}}) == 0
        # a token of the other deployment (other secret) is nobody here
        response = other.request("GET", API + "/profile", token=api.admin)
        assert response.status_code == 401
    finally:
        stop_app_server(other)
        shutil.rmtree(other_home, ignore_errors=True)