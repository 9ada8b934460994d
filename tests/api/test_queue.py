"""The queue summary, its history, the daemons and maintenance over HTTP
with the package's real app server and worker."""

import datetime
import time

import pytest
from bson import ObjectId

from core4.mongo import to_datetime

from tests.api.conftest import API, unique
from tests.apijobs.client import (DUMMY, DUMMY_NAME, PARKED, enqueue,
                                  error, get_job, wait_job)

COUNTED = "tests.apijobs.CountedJob"
#: longer than the worker's check_requests interval (0.2 s in tests) and
#: its loop: the time a worker may take to notice a maintenance change
NOTICE = 1.0


def get(api, path, token=None, **params):
    """GET ``path`` below the API; return ``data`` (asserting 200)."""
    response = api.request("GET", API + path, token=token or api.admin,
                           params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def maintenance(api, token=None, **body):
    """PUT /system/maintenance."""
    return api.request("PUT", API + "/system/maintenance",
                       token=token or api.admin, json=body)


def iso(moment):
    """ISO 8601 text of epoch seconds."""
    return datetime.datetime.fromtimestamp(
        moment, datetime.timezone.utc).isoformat()


# GET /queue ----------------------------------------------------------------

def test_queue_counts_by_state_and_name(api):
    jobs = [enqueue(api, COUNTED, i=unique()) for _ in range(3)]
    response = api.request("PUT", API + "/job/%s/kill" % jobs[0]["_id"],
                           token=api.admin)
    assert response.status_code == 200, response.text
    summary = get(api, "/queue")
    assert set(summary["state"]) == {
        "pending", "running", "complete", "deferred", "failed", "inactive",
        "error", "killed"}
    assert sum(summary["state"].values()) == summary["total"]
    assert sum(row["n"] for row in summary["name"]) == summary["total"]
    counted = {row["state"]: row["n"] for row in summary["name"]
               if row["name"] == COUNTED}
    assert counted == {"pending": 2, "killed": 1}
    assert summary["state"]["pending"] >= 2
    assert summary["state"]["killed"] >= 1

    _, stranger = api.create_user([r"job://core4/r"])
    masked = get(api, "/queue", token=stranger)
    names = {row["name"] for row in masked["name"]}
    assert COUNTED not in names and "UnauthorizedJob" in names
    assert names <= {"UnauthorizedJob"} | {
        row["name"] for row in summary["name"]
        if row["name"].startswith("core4.")}
    assert sum(row["n"] for row in masked["name"]) == masked["total"]
    _, reader = api.create_user([r"job://tests\.apijobs\.Counted/r"])
    shown = {row["state"]: row["n"] for row in get(
        api, "/queue", token=reader)["name"] if row["name"] == COUNTED}
    assert shown == {"pending": 2, "killed": 1}


# GET /queue/history -------------------------------------------------------

def test_history_counts_events_and_reconstructs_the_size(api):
    before = api.db.sys_queue.count_documents({})
    start = time.time()
    for _ in range(3):
        enqueue(api, PARKED, i=unique())
    end = time.time()
    after = api.db.sys_queue.count_documents({})
    assert after == before + 3, "the queue changed during the test"
    buckets = get(api, "/queue/history", since=iso(start),
                  until=iso(end + 0.5), interval=0.5)
    ends = [datetime.datetime.fromisoformat(b["at"]) for b in buckets]
    steps = {(later - earlier).total_seconds()
             for earlier, later in zip(ends, ends[1:-1])}
    assert steps <= {0.5}
    assert ends[-1] == datetime.datetime.fromisoformat(iso(end + 0.5))
    assert sum(b["events"].get("enqueue_job", 0) for b in buckets) == 3
    assert buckets[-1]["size"] == after
    # a window that ends before the enqueues: its size is the old one,
    # reconstructed from today's size and the events since
    until = datetime.datetime.fromisoformat(iso(start))
    since = until - datetime.timedelta(seconds=10)
    earlier = get(api, "/queue/history", since=since.isoformat(),
                  until=until.isoformat(), interval=1)
    assert len(earlier) == 10
    assert earlier[-1]["size"] == before
    assert api.db.sys_queue.count_documents({}) == after


def test_history_leaves_out_events_before_since(api):
    """An event a moment before ``since`` (NX-27017 compares datetimes by
    whole seconds, so its query returns it) is in no bucket."""
    for _ in range(10):
        job = enqueue(api, PARKED, i=unique())
        event = api.db.sys_event.find_one({
            "name": "enqueue_job", "data._id": {"$in": [ObjectId(
                job["_id"])]}})
        since = to_datetime(event["created"]) + datetime.timedelta(
            milliseconds=1)
        if since.second == to_datetime(event["created"]).second:
            break
    buckets = get(api, "/queue/history", since=since.isoformat(),
                  until=(since + datetime.timedelta(seconds=2)).isoformat(),
                  interval=0.5)
    assert len(buckets) == 4
    assert [b["events"] for b in buckets] == [{}] * 4


def test_history_defaults_to_the_last_hour(api):
    buckets = get(api, "/queue/history")
    assert len(buckets) == 60
    last = datetime.datetime.fromisoformat(buckets[-1]["at"])
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - last).total_seconds()) < 30
    first = datetime.datetime.fromisoformat(buckets[0]["at"])
    assert (last - first).total_seconds() == pytest.approx(59 * 60)


def test_history_with_one_bucket_larger_than_the_span(api):
    buckets = get(api, "/queue/history", since="0001-01-01T00:00:00Z",
                  until="2000-01-01T00:00:00Z", interval=1e300)
    assert [b["at"] for b in buckets] == ["2000-01-01T00:00:00+00:00"]


@pytest.mark.parametrize("params, words", [
    ({"since": "2020-01-02", "until": "2020-01-01"},
     ["since must be before until"]),
    ({"since": "2020-01-01", "until": "2020-01-01"},
     ["since must be before until"]),
    ({"interval": 0.1}, ["at most 2000 buckets"]),
    ({"interval": 0}, ["interval must be positive"]),
    ({"interval": -5}, ["interval must be positive"]),
    ({"interval": "nan"}, ["interval", "not a finite number"]),
    ({"interval": "often"}, ["interval", "'often'"]),
    ({"since": "last week"}, ["since", "'last week'"]),
    ({"until": "0001-01-01T00:30:00Z"}, ["too early"]),
])
def test_history_bad_input_is_400(api, params, words):
    error(api.request("GET", API + "/queue/history", token=api.admin,
                      params=params), 400, *words)


# GET /system ----------------------------------------------------------------

def test_system_shows_the_worker_and_the_app_server(api, api_worker):
    _, token = api.create_user([])
    system = get(api, "/system", token=token)
    daemons = {doc["kind"]: doc for doc in system["daemons"]
               if doc["_id"].startswith(("apiworker@", "app@"))}
    assert set(daemons) == {"worker", "app"}
    assert daemons["worker"]["pid"] == api_worker.pid
    assert daemons["app"]["pid"] == api.process.pid
    assert daemons["app"]["url"] == api.url
    assert "core4.api.v1.container.CoreApiServer" in daemons["app"][
        "containers"]
    for doc in daemons.values():
        assert doc["phase"] == "loop"
        assert 0 <= doc["heartbeat_age"] < 3  # daemon.alive_timeout
    assert system["maintenance"] == {"global": False, "projects": []}


# PUT /system/maintenance --------------------------------------------------

def test_maintenance_is_for_administrators(api):
    name, token = api.create_user([r"api://.*", r"job://.*/x"])
    error(maintenance(api, token, paused=True), 403, name,
          "PUT /core4/api/v1/system/maintenance is not permitted")
    assert get(api, "/system")["maintenance"]["global"] is False


@pytest.mark.parametrize("body, words", [
    ({}, ["argument paused is required"]),
    ({"paused": "maybe"}, ["paused", "not a boolean"]),
    ({"paused": True, "project": "my project"},
     ["'my project' is not a project name"]),
    ({"paused": True, "project": 7}, ["project", "not a string"]),
    ({"paused": True, "everything": True},
     ["unknown argument(s): everything"]),
])
def test_maintenance_bad_input_is_400(api, body, words):
    try:
        error(maintenance(api, **body), 400, *words)
    finally:
        maintenance(api, paused=False)
    assert get(api, "/system")["maintenance"] == {"global": False,
                                                  "projects": []}


def stays_pending(api, _id, seconds):
    """Assert job ``_id`` stays pending for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert get_job(api, _id)["state"] == "pending"
        time.sleep(0.1)


def test_global_pause_stops_claims_until_resumed(api, api_worker):
    try:
        response = maintenance(api, paused=True)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {"global": True, "projects": []}
        assert get(api, "/system")["maintenance"]["global"] is True
        time.sleep(NOTICE)  # nothing to poll: the worker keeps it to itself
        job = enqueue(api, DUMMY, sleep=0.2, tag=unique())
        stays_pending(api, job["_id"], 1.5)
        response = maintenance(api, paused=False)
        assert response.json()["data"] == {"global": False, "projects": []}
        wait_job(api, job["_id"], "complete", journaled=True)
    finally:
        maintenance(api, paused=False)


def test_project_pause_stops_only_that_project(api, api_worker):
    try:
        response = maintenance(api, paused=True, project="tests")
        assert response.status_code == 200, response.text
        assert response.json()["data"] == {"global": False,
                                           "projects": ["tests"]}
        time.sleep(NOTICE)  # nothing to poll: the worker keeps it to itself
        paused = enqueue(api, "tests.apijobs.QuickJob", tag=unique())
        other = enqueue(api, DUMMY, sleep=0.2, tag=unique())
        wait_job(api, other["_id"], "complete", journaled=True)
        assert other["name"] == DUMMY_NAME
        stays_pending(api, paused["_id"], 0.5)
        # pausing twice is fine; resuming another project changes nothing
        maintenance(api, paused=True, project="tests")
        data = maintenance(api, paused=False, project="core4").json()["data"]
        assert data == {"global": False, "projects": ["tests"]}
        data = maintenance(api, paused=False, project="tests").json()["data"]
        assert data == {"global": False, "projects": []}
        wait_job(api, paused["_id"], "complete", journaled=True)
    finally:
        maintenance(api, paused=False, project="tests")
    assert get(api, "/system")["maintenance"]["projects"] == []
