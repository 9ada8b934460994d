"""The REST API's contract, proven: the OpenAPI document validates with a
standard validator, declares what the server enforces, links operations,
and schemathesis (every check, stateful testing on) finds no failure
against a live app server with a worker, with and without a token. Also
the HTTP manners a client relies on: 405 with ``Allow``, the login
checked before any body is parsed, bad input answered in one error
envelope naming the field, a removed job reading back as ``removed``."""

import os
import re
import subprocess
import sys

import pytest
from openapi_spec_validator import validate

from core4.api.v1.contract.common import PER_PAGE
from core4.config import get_config
from tests.api.conftest import API, unique
from tests.apijobs.client import PARKED, enqueue, get_job, page
from tests.appserver import start_app_server, stop_app_server, worker_for

DOC = API + "/openapi.json"
#: the schemathesis command line of the test extra's schemathesis
ST = os.path.join(os.path.dirname(sys.executable), "st")
#: examples per operation and phase: the two runs take about a minute
EXAMPLES = 15
#: operations that also refuse schema-valid input with 400 for rules JSON
#: Schema cannot state (each is named in the operation's description):
#: ``since`` before ``until`` (listJobs, listAudit, getQueueHistory),
#: roles that exist, permissions whose regular expression compiles, a
#: user with both email and password, not deleting oneself (the roles),
#: the current password (changePassword), the job's own validation of
#: its arguments (enqueueJob)
CONFIG = """
[[operations]]
include-operation-id = ["listJobs", "listAudit", "getQueueHistory",
  "createRole", "updateRole", "deleteRole", "changePassword", "enqueueJob"]
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "429"]
"""


@pytest.fixture(scope="module")
def contract_api(api_env):
    """An app server of its own with a worker, for schemathesis (it may
    pause the queue, create users, kill jobs ...). Login failures are not
    throttled here (the throttle's 429 is tested in test_auth), so that
    invalid credentials keep answering 401; follows end after 2 s."""
    server = start_app_server(
        api_env, "contract%d" % os.getpid(), "contract",
        CORE4_OPTION_api__throttle__enabled="!!bool false",
        CORE4_OPTION_api__follow_timeout="!!float 2")
    try:
        with worker_for(server, "contractworker", api_env["base"]):
            yield server
    finally:
        stop_app_server(server, drop=True)


@pytest.fixture(scope="module")
def document(api):
    """The document the shared app server publishes."""
    response = api.request("GET", DOC)
    assert response.status_code == 200
    return response.json()


def schemathesis(server, folder, *headers):
    """Run schemathesis against ``server`` with every check and phase;
    return ``(exit code, output)``."""
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [ST, "--config-file", str(config), "run", server.url + DOC,
               "--checks", "all",
               "--phases", "examples,coverage,fuzzing,stateful",
               "--max-examples", str(EXAMPLES), "--generation-deterministic",
               "--suppress-health-check", "all", "--request-timeout", "30",
               "--no-color"]
    for header in headers:
        command += ["--header", header]
    result = subprocess.run(command, capture_output=True, text=True,
                            cwd=folder, timeout=600)
    return result.returncode, result.stdout + result.stderr


def summary(output):
    """``(generated, passed)`` test cases of a schemathesis run."""
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found, output[-3000:]
    return int(found.group(1)), int(found.group(2))


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_failure(contract_api, tmp_path):
    for headers in ([], ["Authorization: Bearer " + contract_api.admin]):
        folder = tmp_path / ("admin" if headers else "anonymous")
        folder.mkdir()
        code, output = schemathesis(contract_api, folder, *headers)
        assert code == 0, output[-6000:]
        generated, passed = summary(output)
        assert generated == passed > 500, output[-3000:]
        phases = output.split("API Operations:")[-1]
        for phase in ("Coverage", "Fuzzing", "Stateful"):
            assert re.search(r"✅ %s\n" % phase, phases), output[-3000:]
    # the admin run went past the login: jobs were enqueued and ran
    assert contract_api.db.sys_journal.count_documents({}) > 0


def test_document_validates_and_declares_the_constraints(document):
    validate(document)
    paths = document["paths"]
    listing = {p["name"]: p for p in paths[API + "/job"]["get"][
        "parameters"]}
    assert listing["per_page"]["schema"]["maximum"] == int(
        get_config().api.max_per_page) == PER_PAGE.schema[
            "maximum"](get_config())
    assert "removed" in listing["state"]["schema"]["items"]["enum"]
    enqueue_op = paths[API + "/job"]["post"]
    body = enqueue_op["requestBody"]["content"]["application/json"][
        "schema"]
    assert body["required"] == ["qual_name"]
    assert body["properties"]["qual_name"]["pattern"].startswith("^")
    assert body["additionalProperties"] is False
    links = enqueue_op["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        "getJob", "getJobLog", "getJobStdout", "followJob", "killJob",
        "restartJob", "removeJob"}
    create = paths[API + "/roles"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in create.values()} == {
        "getRole", "updateRole", "deleteRole"}
    for method in ("put", "delete"):
        headers = [p for p in paths[API + "/roles/{_id}"][method][
            "parameters"] if p["in"] == "header"]
        assert [(p["name"], p["required"]) for p in headers] == [
            ("If-Match", True)]
    job = document["components"]["schemas"]["Job"]
    assert "removed" in job["properties"]["state"]["enum"]
    ok = paths[API + "/job/{_id}"]["get"]["responses"]["200"]
    data = ok["content"]["application/json"]["schema"]["properties"]["data"]
    assert data == {"$ref": "#/components/schemas/Job"}


@pytest.mark.parametrize("method", ["TRACE", "PATCH", "OPTIONS", "HEAD"])
def test_a_method_not_served_is_405_with_allow_before_the_login(api,
                                                                method):
    response = api.request(method, API + "/job")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    if method != "HEAD":
        assert response.json()["code"] == 405
    response = api.request(method, API + "/roles/%s" % ("0" * 24),
                           token=api.admin)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, PUT, DELETE"


def test_the_login_is_checked_before_the_body_is_parsed(api):
    broken = {"Content-Type": "multipart/form-data"}  # no boundary
    response = api.request("POST", API + "/job", headers=broken,
                           data=b"--x\r\n")
    assert response.status_code == 401
    response = api.request("POST", API + "/job", headers=broken,
                           data=b"--x\r\n", token=api.admin)
    assert response.status_code == 400
    assert "body" in response.json()["message"]


@pytest.mark.parametrize("method, path, kwargs, field", [
    ("GET", "/job", {"params": {"per_page": 0}}, "per_page"),
    ("GET", "/job", {"params": {"since": "soon"}}, "since"),
    ("GET", "/job/%s/log" % ("0" * 24), {"params": {"limit": 0}}, "limit"),
    ("POST", "/job", {"json": {"qual_name": "a.b", "priority": 1}},
     "priority"),
    ("POST", "/job", {"json": {"args": {}}}, "qual_name"),
    ("POST", "/roles", {"json": {"name": "x", "email": "no"}}, "email"),
    ("PUT", "/system/maintenance", {"json": {"paused": "maybe"}},
     "paused"),
    ("GET", "/queue/history", {"params": {"interval": -1}}, "interval"),
])
def test_bad_input_is_one_envelope_naming_the_field(api, method, path,
                                                     kwargs, field):
    response = api.request(method, API + path, token=api.admin, **kwargs)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and body["data"] == {"field": field}
    assert field in body["message"] and "\n" not in body["message"]


def test_login_refuses_extra_fields_and_takes_a_form(api):
    response = api.request("POST", API + "/login", json={
        "username": "admin", "password": "x", "remember": True})
    assert response.status_code == 400
    assert response.json()["data"] == {"field": "remember"}
    from tests.api.conftest import ADMIN_PASSWORD
    response = api.request("POST", API + "/login", data={
        "username": "admin", "password": ADMIN_PASSWORD})
    assert response.status_code == 200 and response.json()["data"]["token"]


def test_a_removed_job_reads_back_as_removed(api):
    job = enqueue(api, PARKED, tag=unique())
    response = api.request("DELETE", API + "/job/%s" % job["_id"],
                           token=api.admin)
    assert response.status_code == 200, response.text
    gone = get_job(api, job["_id"])
    assert gone["journaled"] is True
    assert gone["state"] == "removed" and gone["flags"]["removed"]
    listed = page(api, source="journal", state="removed", name=PARKED,
                  per_page=1000)
    assert job["_id"] in [doc["_id"] for doc in listed["data"]]
