"""Passwords cannot starve the app server, and a token belongs to one user
for a bounded time (issue 20, items 3 and 4), over real HTTP.

``ident`` is an app server of its own (a token lifetime of 600 s, its own
database, so its login throttle counts only this module's attempts);
``longer`` serves the same database and core4 home (so it signs with the
same secret) but issues tokens for 30 years, as a misconfigured or forged
issuer would.
"""

import os
import threading
import time

import types

import jwt
import pytest
import requests

from core4.api import role
from tests.api.conftest import API, unique
from tests.appserver import start_app_server, stop_app_server

#: seconds of the tokens of ``ident``, and of ``longer`` (30 years)
LIFETIME = 600
LONGER = 30 * 365 * 24 * 3600
#: concurrent HTTP Basic attempts of the flood
FLOOD = 50


@pytest.fixture(scope="module")
def ident(api_env):
    """An app server with a token lifetime of :data:`LIFETIME`."""
    server = start_app_server(
        api_env, "ident%d" % os.getpid(), "ident",
        CORE4_OPTION_api__token__expiration="!!int %d" % LIFETIME)
    yield server
    stop_app_server(server, drop=True)


@pytest.fixture(scope="module")
def longer(ident, api_env):
    """An app server of ``ident``'s database and home issuing tokens for
    :data:`LONGER` seconds."""
    server = start_app_server(
        api_env, ident.db.name, "longer",
        CORE4_OPTION_api__token__expiration="!!int %d" % LONGER)
    yield server
    stop_app_server(server)


def profile(server, token=None, **kwargs):
    """GET /profile."""
    return server.request("GET", API + "/profile", token=token, **kwargs)


def create(server, name, permissions=()):
    """Create user ``name`` (password ``password-1``); return its token."""
    email = "%s@%s.org" % (name, unique("x"))  # a renamed user keeps its
    response = server.request("POST", API + "/roles", token=server.admin,
                              json={"name": name, "email": email,
                                    "password": "password-1",
                                    "permissions": list(permissions)})
    assert response.status_code == 201, response.text
    return server.login(name, "password-1")


def change(server, user, **fields):
    """PUT /roles/<id> of the user named ``user`` with ``fields``."""
    doc = server.db.sys_role.find_one({"name": user})
    response = server.request("PUT", API + "/roles/%s" % doc["_id"],
                              token=server.admin,
                              json=dict(fields, etag=doc["etag"]))
    assert response.status_code == 200, response.text


def delete(server, name):
    """DELETE /roles/<id> of user ``name``."""
    doc = server.db.sys_role.find_one({"name": name})
    response = server.request("DELETE", API + "/roles/%s" % doc["_id"],
                              token=server.admin,
                              headers={"If-Match": doc["etag"]})
    assert response.status_code == 200, response.text


# item 4: a token belongs to one user, for a bounded time ---------------------

def test_token_of_a_deleted_user_fails_after_the_name_is_reused(ident):
    name = unique("erin")
    old = create(ident, name, ["cop"])
    assert profile(ident, old).json()["data"]["name"] == name
    delete(ident, name)
    assert profile(ident, old).status_code == 401
    new = create(ident, name)  # the same name, no permissions
    assert profile(ident, old).status_code == 401
    assert profile(ident, new).json()["data"]["name"] == name


def test_token_of_a_renamed_user_fails_also_for_the_next_of_that_name(
        ident):
    name = unique("erin")
    old = create(ident, name, ["cop"])
    change(ident, name, name=name + "x")
    assert profile(ident, old).status_code == 401
    create(ident, name)
    assert profile(ident, old).status_code == 401
    # renaming back does not revive it either
    delete(ident, name)
    change(ident, name + "x", name=name)
    assert profile(ident, old).status_code == 401
    assert profile(ident, ident.login(name, "password-1")).status_code == 200


def test_reactivating_a_user_does_not_revive_older_tokens(ident):
    name = unique("erin")
    old = create(ident, name)
    change(ident, name, is_active=False)
    assert profile(ident, old).status_code == 401
    change(ident, name, is_active=True)
    assert profile(ident, old).status_code == 401
    assert profile(ident, ident.login(name, "password-1")).status_code == 200


def test_a_token_made_for_longer_than_the_lifetime_is_refused(ident,
                                                             longer):
    name = unique("erin")
    create(ident, name)
    forged = longer.login(name, "password-1")
    claims = jwt.decode(forged, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == LONGER
    assert profile(longer, forged).status_code == 200  # its own maximum
    response = profile(ident, forged)
    assert response.status_code == 401, response.text
    own = ident.login(name, "password-1")
    claims = jwt.decode(own, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == LIFETIME
    assert profile(ident, own).status_code == 200


def test_users_of_an_older_core4_get_a_stamp_and_keep_working(ident):
    """Before stamps, ``token_version`` counted from 1 for every user:
    the upgrade (at each app server's start) gives each a random stamp;
    the user logs in as before."""
    name = unique("erin")
    create(ident, name)
    ident.db.sys_role.update_one({"name": name},
                                 {"$set": {"token_version": 1}})
    assert role.upgrade_stamps(types.SimpleNamespace(
        role=ident.db.sys_role)) >= 1
    stamp = ident.db.sys_role.find_one({"name": name})["token_version"]
    assert isinstance(stamp, str) and len(stamp) >= 20
    token = ident.login(name, "password-1")
    assert jwt.decode(token, options={"verify_signature": False})[
        "ver"] == stamp
    assert profile(ident, token).status_code == 200


# item 3: password checks cannot starve the server ---------------------------

def test_concurrent_basic_attempts_do_not_slow_an_admin_request(ident):
    admin = ident.admin
    assert profile(ident, admin).status_code == 200
    start = threading.Barrier(FLOOD + 1)
    answers = []

    def attempt():
        start.wait()
        answers.append(profile(ident, auth=(unique("nobody"), "wrong-pw"),
                               timeout=120))
    flood = [threading.Thread(target=attempt) for _ in range(FLOOD)]
    for thread in flood:
        thread.start()
    start.wait()
    took = []
    while any(thread.is_alive() for thread in flood) or not took:
        began = time.monotonic()
        response = profile(ident, admin)
        took.append(time.monotonic() - began)
        assert response.status_code == 200, response.text
    for thread in flood:
        thread.join()
    assert max(took) < 1.0, took
    codes = sorted(response.status_code for response in answers)
    assert set(codes) <= {401, 429}, codes
    busy = [response.json()["message"] for response in answers
            if response.status_code == 429]
    assert busy and all(message == "too many password checks at once: "
                        "try again in a second" for message in busy), busy
    assert all(response.headers.get("Retry-After") for response in answers
               if response.status_code == 429)
    assert "Traceback" not in ident.output()


def test_basic_is_not_checked_on_public_routes(ident):
    """A public route (but ``GET /login``) ignores HTTP Basic: no
    password is checked, no failure counted, no lock."""
    name = unique("erin")
    create(ident, name)
    for _ in range(8):  # more than the throttle's 5 attempts
        response = ident.request("GET", API + "/openapi.json",
                                 auth=(name, "wrong-password"))
        assert response.status_code == 200, response.text
    assert profile(ident, auth=(name, "password-1")).status_code == 200
    response = ident.request("GET", API + "/login", auth=(name, "password-1"))
    assert response.status_code == 200
    assert response.json()["data"]["username"] == name
    response = requests.get(ident.url + API + "/login", auth=(name, "wrong"),
                            timeout=30)
    assert response.status_code == 401
