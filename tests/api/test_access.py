"""What a request may learn and what the server records (issue 20): the
job listing's filters never reveal jobs the user may not read, forwarded
headers count only from a trusted proxy, and every request leaves one
access log line with the real peer address."""

import os
import re

import pytest
import yaml

from tests.api.conftest import API, unique
from tests.apijobs.client import PARKED, enqueue
from tests.appserver import start_app_server, stop_app_server
from tests.support import wait_for

#: what a client without a trusted proxy claims
FORGED = "203.0.113.77"


def listing(api, token, **params):
    """GET /job as ``token``; return ``(data, total_count)``."""
    response = api.request("GET", API + "/job", token=token,
                           params=dict(per_page=1000, **params))
    assert response.status_code == 200, response.text
    body = response.json()
    return body["data"], body["total_count"]


def test_filters_never_reveal_hidden_jobs(api):
    owner, owner_token = api.create_user([r"job://tests\.apijobs\./x"])
    job = enqueue(api, PARKED, token=owner_token, tag=unique())
    _, stranger = api.create_user([])
    # unfiltered, a hidden job shows masked: only its _id and state
    data, _ = listing(api, stranger)
    assert {"_id": job["_id"], "name": "UnauthorizedJob", "state": "pending",
            "masked": True, "args": None} in data
    # a filter or a sort on what the mask hides matches hidden jobs never
    for filters in ({"name": PARKED}, {"name": "tests."},
                    {"name": unique("nothing")}, {"user": owner},
                    {"user": unique("nobody")},
                    {"since": job["enqueued"]["at"]},
                    {"name": "tests.", "sort": "-name"},
                    {"sort": "enqueued.username"}):
        assert listing(api, stranger, **filters) == ([], 0), filters
    # who may read the job finds it with the same filters
    _, reader = api.create_user([r"job://tests\.apijobs\.ParkedJob/r"])
    for filters in ({"name": PARKED}, {"user": owner}):
        data, total = listing(api, reader, **filters)
        assert job["_id"] in [doc["_id"] for doc in data]
        assert all(doc["name"] == PARKED for doc in data)
        assert total == len(data)
    api.request("DELETE", API + "/job/%s" % job["_id"], token=api.admin)


def access_line(server, request_id):
    """Wait for the access log line of the request ``request_id``."""
    def find():
        for line in server.output().splitlines():
            if "id=%s" % request_id in line and "status=" in line:
                return line
        return None
    return wait_for(find, 15, message="the access log line of %s" %
                    request_id)


def fields(line):
    """The ``key=value`` fields of a logfmt line."""
    return dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line))


def test_access_log_ignores_forwarded_headers_by_default(api):
    forged = {"X-Forwarded-For": FORGED, "X-Real-Ip": FORGED,
              "X-Forwarded-Proto": "https"}
    response = api.request("GET", API + "/profile", token=api.admin,
                           headers=forged, params={"token": "s3cret"})
    assert response.status_code == 200
    line = access_line(api, response.json()["_id"])
    found = fields(line)
    assert found["status"] == "200" and found["method"] == "GET"
    assert found["path"] == API + "/profile"
    assert found["user"] == "admin"
    assert found["client"] == found["peer"] == "127.0.0.1"
    assert float(found["ms"]) >= 0
    assert FORGED not in line and "s3cret" not in line
    # a refused request is logged too, without a user
    response = api.request("GET", API + "/roles", headers=forged)
    assert response.status_code == 401
    found = fields(access_line(api, response.json()["_id"]))
    assert (found["status"], found["user"], found["client"]) == (
        "401", "-", "127.0.0.1")
    # and the claim of TLS is ignored: no Secure login cookie
    login = api.request("POST", API + "/login", headers=forged, json={
        "username": unique("nobody"), "password": "wrong password"})
    assert FORGED not in api.output()
    assert "Secure" not in login.headers.get("Set-Cookie", "")


@pytest.fixture(scope="module")
def behind_proxy(api_env):
    """An app server that trusts a proxy on 127.0.0.1."""
    path = os.path.join(api_env["base"], "proxied.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump({"api": {"trusted_proxies": ["127.0.0.1"]}}, handle)
    server = start_app_server(api_env, "acc%d" % os.getpid(), "proxied",
                              CORE4_CONFIG=path)
    yield server
    stop_app_server(server, drop=True)


def test_access_log_believes_a_trusted_proxy(behind_proxy):
    response = behind_proxy.request(
        "GET", API + "/profile", token=behind_proxy.admin, headers={
            "X-Forwarded-For": "198.51.100.1, " + FORGED,
            "X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    found = fields(access_line(behind_proxy, response.json()["_id"]))
    assert found["client"] == FORGED and found["peer"] == "127.0.0.1"
