"""The audit trail (``GET /core4/api/v1/audit``, admins only) with the
package's real app server: each action a named user takes over HTTP (and
one by ``coco``) leaves exactly one audit record naming the user, the
action and the target; secret job arguments never show in it."""

import datetime
import json
import subprocess
import sys

import pytest

from core4.base import username
from core4.mongo import to_datetime
from core4.queue.queue import CoreQueue
from tests.api.conftest import API, unique
from tests.appserver import isolated_env
from tests.apijobs.client import PARKED, enqueue, error
from tests.support import ROOT

AUDIT = API + "/audit"


def audit(api, token=None, **params):
    """GET /audit with ``params``; return the envelope (asserting 200)."""
    response = api.request("GET", AUDIT, token=token or api.admin,
                           params=params)
    assert response.status_code == 200, response.text
    return response.json()


def one(api, user, action, **target):
    """The single audit record of ``user`` and ``action`` whose target has
    the fields ``target``."""
    found = [doc for doc in audit(api, user=user, action=action,
                                  per_page=100)["data"]
             if all(doc["target"].get(k) == v for k, v in target.items())]
    assert len(found) == 1, (action, found)
    doc = found[0]
    assert doc["user"] == user and doc["action"] == action
    assert datetime.datetime.fromisoformat(doc["created"])
    return doc


def test_each_action_of_a_named_user_is_audited_once(api):
    name, token = api.create_user(["cop"])
    secret = unique("clear-secret-")
    job = enqueue(api, PARKED, token=token, tag=unique(),
                  token_arg={"$secret": secret})
    _id = job["_id"]
    response = api.request("PUT", API + "/job/%s/kill" % _id, token=token)
    assert response.status_code == 200, response.text
    response = api.request("PUT", API + "/job/%s/restart" % _id,
                           token=token)
    assert response.status_code == 200, response.text
    new_id = response.json()["data"]["new_id"]
    response = api.request("DELETE", API + "/job/%s" % new_id, token=token)
    assert response.status_code == 200, response.text

    role = unique("r")
    response = api.request("POST", API + "/roles", token=token, json={
        "name": role, "permissions": ["api://x"]})
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    response = api.request("PUT", API + "/roles/%s" % created["_id"],
                           token=token, json={"etag": created["etag"],
                                              "permissions": []})
    assert response.status_code == 200, response.text
    response = api.request("DELETE", API + "/roles/%s" % created["_id"],
                           token=token, params={
                               "etag": response.json()["data"]["etag"]})
    assert response.status_code == 200, response.text

    project = unique("p")
    for paused in (True, False):
        response = api.request("PUT", API + "/system/maintenance",
                               token=token, json={"paused": paused,
                                                  "project": project})
        assert response.status_code == 200, response.text

    stored = "tests.apijobs.ParkedJob"
    one(api, name, "enqueue", job_id=_id, job_name=stored)
    one(api, name, "kill", job_id=_id, job_name=stored)
    one(api, name, "restart", job_id=_id, job_name=stored,
        new_id=new_id)
    one(api, name, "remove", job_id=new_id, job_name=stored)
    one(api, name, "create_role", role=role, kind="role")
    assert one(api, name, "update_role", role=role)["target"][
        "fields"] == ["permissions"]
    one(api, name, "delete_role", role=role)
    one(api, name, "pause", project=project)
    one(api, name, "resume", project=project)
    everything = audit(api, user=name, per_page=100)
    assert everything["total_count"] == 9
    # newest first
    assert [doc["action"] for doc in everything["data"]][:2] == [
        "resume", "pause"]
    # no clear secret in any audit record, over HTTP or in the database
    assert secret not in json.dumps(everything)
    assert secret not in json.dumps(list(api.db.sys_event.find(
        {"channel": "audit"}, {"_id": 0, "created": 0})), default=str)


def test_paging_newest_first_and_since(api):
    name, token = api.create_user(["cop"])
    roles = []
    for _ in range(3):
        roles.append(unique("r"))
        response = api.request("POST", API + "/roles", token=token,
                               json={"name": roles[-1]})
        assert response.status_code == 201, response.text
    first = audit(api, user=name, per_page=2, page=0)
    second = audit(api, user=name, per_page=2, page=1)
    assert first["total_count"] == 3 and first["page_count"] == 2
    assert [d["target"]["role"] for d in first["data"] + second["data"]] \
        == roles[::-1]
    later = audit(api, user=name, since=first["data"][0]["created"])
    assert [d["target"]["role"] for d in later["data"]] == roles[-1:]


def test_coco_actions_are_audited_as_the_os_user(api):
    project = unique("p")
    for flag in ("--pause", "--resume"):
        subprocess.run([sys.executable, "-m", "core4.script.coco", flag,
                        project], env=api.env, cwd=ROOT, check=True,
                       capture_output=True, timeout=60)
    one(api, username(), "pause", project=project)
    one(api, username(), "resume", project=project)


def test_halt_is_audited(servers):
    with isolated_env(servers, "audithalt"):
        queue = CoreQueue()
        at = queue.halt(by="operator")
        queue.halt()
        docs = list(queue.sys.event.find({"channel": "audit"}).sort(
            "_id", 1))
    assert [(d["name"], d["author"]) for d in docs] == [
        ("halt", "operator"), ("halt", username())]
    assert to_datetime(docs[0]["data"]["at"]) == to_datetime(at)


def test_audit_is_for_administrators(api):
    name, token = api.create_user([])
    error(api.request("GET", AUDIT, token=token), 403, name)


@pytest.mark.parametrize("params, words", [
    ({"action": "fly"}, ("unknown action", "fly")),
    ({"page": -1}, ("page",)),
    ({"per_page": 0}, ("per_page",)),
    ({"since": "yesterday"}, ("since",)),
    ({"since": "2030-01-01T00:00:00+00:00",
      "until": "2020-01-01T00:00:00+00:00"}, ("since must be before",)),
    ({"colour": "red"}, ("unknown argument", "colour")),
])
def test_audit_bad_input_is_400(api, params, words):
    error(api.request("GET", AUDIT, token=api.admin, params=params), 400,
          *words)
