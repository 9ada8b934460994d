"""The job API over HTTP with the package's real app server and worker:
enqueue, listing, detail, kill, restart, remove and the job registry."""

import datetime
import os
import subprocess
import sys

import psutil
import pytest

from tests.api.conftest import API, unique
from tests.apijobs.client import (DUMMY, DUMMY_NAME, GATE, NOOP, PARKED,
                                  enqueue, error, get_job, page, wait_job)
from tests.support import ROOT, wait_for

HELPER = r"job://core4\.queue\.helper\.job"


def post(api, body, token=None, **kwargs):
    """POST /job with a JSON ``body`` (or raw ``data=``)."""
    if body is not None:
        kwargs["json"] = body
    return api.request("POST", API + "/job", token=token or api.admin,
                       **kwargs)


def action(api, method, _id, verb="", token=None):
    """Send ``method /job/<id>[/verb]``."""
    path = API + "/job/%s" % _id + ("/" + verb if verb else "")
    return api.request(method, path, token=token or api.admin)


def iso(text, up=False):
    """The ISO 8601 time ``text`` the API answered (UTC, with its offset),
    ``up``: one millisecond (BSON's precision) later."""
    at = datetime.datetime.fromisoformat(text)
    assert at.utcoffset() == datetime.timedelta(0), text
    return (at + datetime.timedelta(milliseconds=1 if up else 0)).isoformat()


@pytest.fixture
def gate(tmp_path):
    """The path of a gate file a :class:`tests.apijobs.GateJob` waits
    for."""
    return str(tmp_path / unique("gate"))


def running_pid(api, job, gate):
    """Wait until the GateJob ``job`` executes; return its pid."""
    wait_job(api, job["_id"], "running")
    wait_for(lambda: os.path.exists(gate + ".pid"), 15,
             message="the job to write its pid")
    with open(gate + ".pid") as handle:
        return int(handle.read())


def alive(pid):
    """True if process ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def open_gate(path):
    """Let the GateJobs waiting for ``path`` finish."""
    with open(path, "w"):
        pass


# enqueue --------------------------------------------------------------------

def test_enqueue_answers_the_pending_job(api, api_worker):
    name, token = api.create_user([HELPER + "/x"])
    tag = unique()
    response = post(api, {"qual_name": DUMMY,
                          "args": {"sleep": 0.2, "tag": tag}}, token=token)
    assert response.status_code == 201, response.text
    assert response.json()["code"] == 201
    job = response.json()["data"]
    assert len(job["_id"]) == 24
    assert job["state"] == "pending"
    assert job["name"] == DUMMY_NAME
    assert job["args"] == {"sleep": 0.2, "tag": tag}
    assert job["enqueued"]["username"] == name
    assert job["flags"] == {"zombie": False, "nonstop": False,
                            "removed": False, "killed": False}
    assert "_hash" not in job
    done = wait_job(api, job["_id"], "complete", journaled=True)
    assert done["journaled"] is True and done["runtime"] > 0
    assert done["prog"]["value"] == 1.0
    assert done["enqueued"]["username"] == name
    # times are ISO 8601 with their UTC offset, in order
    enqueued_at, started, finished = (datetime.datetime.fromisoformat(iso(
        text)) for text in (done["enqueued"]["at"], done["started_at"],
                            done["finished_at"]))
    assert enqueued_at <= started <= finished


def test_enqueue_needs_execute_permission(api):
    reader, read_token = api.create_user([HELPER + "/r"])
    error(post(api, {"qual_name": DUMMY, "args": {"tag": unique()}},
               token=read_token), 403, reader, "may not execute", DUMMY)
    _, no_token = api.create_user([])
    error(post(api, {"qual_name": NOOP}, token=no_token), 403,
          "may not execute")
    # a re-exported class is stored, read and killed under its own name:
    # permission for the alias alone does not let a user enqueue it
    alias, alias_token = api.create_user([HELPER + r"\.DummyJob/x"])
    error(post(api, {"qual_name": DUMMY, "args": {"tag": unique()}},
               token=alias_token), 403, alias, DUMMY_NAME)
    assert page(api, user=alias)["total_count"] == 0
    assert page(api, user=alias, source="journal")["total_count"] == 0
    error(api.request("POST", API + "/job", json={"qual_name": DUMMY}),
          401, "login required")


@pytest.mark.parametrize("body, words", [
    ({"qual_name": DUMMY, "args": [1]}, ["args", "not a JSON object"]),
    ({"qual_name": DUMMY, "args": "sleep"}, ["args", "'sleep'"]),
    ({"qual_name": DUMMY, "args": {"$sleep": 1}},
     ["argument name '$sleep'"]),
    ({"qual_name": DUMMY, "args": {"a.b": 1}}, ["argument name 'a.b'"]),
    ({"qual_name": DUMMY, "args": {"n": 2 ** 70}}, ["args cannot be stored"]),
    ({"qual_name": DUMMY, "args": {}, "priority": 3},
     ["unknown argument(s): priority"]),
    ({"args": {}}, ["argument qual_name is required"]),
    ({"qual_name": 5}, ["qual_name=5", "not a string"]),
    ({"qual_name": "DummyJob"}, ["'DummyJob' is not a qualified job name"]),
    ({"qual_name": "core4..job.X"}, ["is not a qualified job name"]),
    ({"qual_name": "tests.jobs.mod.NotAJob"}, ["is not a core4 job"]),
    ({"qual_name": "tests.jobs.mod.AbstractJob"}, ["abstract job"]),
    ({"qual_name": "tests.jobs.mod.NoAuthorChild"},
     ["attribute author must be set"]),
])
def test_enqueue_bad_input_is_400(api, body, words):
    error(post(api, body), 400, *words)


@pytest.mark.parametrize("data, words", [
    (b'{"qual_name": ', ["request body is not valid JSON"]),
    (b'["%s"]' % DUMMY.encode(), ["request body must be a JSON object"]),
    (b"\xff\xfe{}", ["request body is not valid JSON"]),
])
def test_enqueue_non_json_body_is_400(api, data, words):
    error(post(api, None, data=data,
               headers={"Content-Type": "application/json"}), 400, *words)


@pytest.mark.parametrize("qual_name, words", [
    ("nosuch_core4_module.mod.Job", ["module nosuch_core4_module not found"]),
    ("core4.queue.helper.job.NoSuchJob", ["has no class NoSuchJob"]),
    # read from the source: the module is not imported (it would fail)
    ("tests.jobs.broken.Job", ["module tests.jobs.broken has no class Job"]),
])
def test_enqueue_unknown_job_is_404(api, qual_name, words):
    error(post(api, {"qual_name": qual_name}), 404, qual_name, *words)


def test_same_job_and_args_while_queued_is_409(api, api_worker, gate):
    job = enqueue(api, GATE, gate=gate)
    error(post(api, {"qual_name": GATE, "args": {"gate": gate}}), 409,
          GATE, "already in the queue")
    # other args are another job
    other = enqueue(api, GATE, gate=gate, n=2)
    open_gate(gate)
    for each in (job, other):
        wait_job(api, each["_id"], "complete", journaled=True)
    again = enqueue(api, GATE, gate=gate)
    assert again["_id"] != job["_id"]
    wait_job(api, again["_id"], "complete", journaled=True)


# listing --------------------------------------------------------------------

@pytest.fixture(scope="module")
def parked(api):
    """Five jobs of a user of their own that never run (two killed):
    ``(user name, token, [job documents in enqueue order])``."""
    name, token = api.create_user([r"job://tests\.apijobs/x"])
    jobs = [enqueue(api, PARKED, token=token, i=i) for i in range(5)]
    for job in jobs[3:]:
        assert action(api, "PUT", job["_id"], "kill").status_code == 200
    return name, token, jobs


def ids(body):
    """The job ids of a listing envelope."""
    return [doc["_id"] for doc in body["data"]]


def test_listing_pages(api, parked):
    user, token, jobs = parked
    all_ids = [job["_id"] for job in jobs]
    pages = [page(api, token, user=user, per_page=2, page=n)
             for n in range(4)]
    assert [body["count"] for body in pages] == [2, 2, 1, 0]
    for n, body in enumerate(pages):
        assert body["code"] == 200
        assert (body["page"], body["per_page"]) == (n, 2)
        assert (body["total_count"], body["page_count"]) == (5, 3)
    assert sum((ids(body) for body in pages), []) == all_ids
    assert page(api, token, user=user)["per_page"] == 25
    huge = page(api, token, user=user, page=10 ** 30)
    assert huge["data"] == [] and huge["total_count"] == 5


@pytest.mark.parametrize("params, words", [
    ({"per_page": 1001}, ["per_page must be 1 to 1000"]),
    ({"per_page": 0}, ["per_page must be 1 to 1000"]),
    ({"per_page": "ten"}, ["per_page", "'ten'"]),
    ({"page": -1}, ["page must be 0 or more"]),
    ({"state": "waiting"}, ["unknown state 'waiting'", "pending"]),
    ({"state": "pending,nope"}, ["unknown state 'nope'"]),
    ({"state": ""}, ["unknown state ''"]),
    ({"sort": "age"}, ["cannot sort by 'age'", "enqueued.at"]),
    ({"sort": "--name"}, ["cannot sort by '--name'"]),
    ({"since": "yesterday"}, ["since", "'yesterday'"]),
    ({"until": "2020-13-01"}, ["until", "month must be in 1..12"]),
    ({"since": "2020-01-02", "until": "2020-01-01"},
     ["since must be before until"]),
    ({"source": "archive"}, ["source must be queue or journal"]),
])
def test_listing_bad_input_is_400(api, params, words):
    error(api.request("GET", API + "/job", token=api.admin, params=params),
          400, *words)


def test_listing_filters(api, parked):
    user, token, jobs = parked
    all_ids = [job["_id"] for job in jobs]

    def listed(**params):
        return ids(page(api, token, user=user, **params))
    assert listed(state="pending") == all_ids[:3]
    assert listed(state="killed") == all_ids[3:]
    assert listed(state=["pending", "killed"]) == all_ids
    assert listed(state="pending,killed") == all_ids
    assert listed(state="pending, killed") == all_ids
    assert listed(state="running") == []
    assert listed(name="tests.apijobs.Park") == all_ids
    assert listed(name="tests.apijobs.Gate") == []
    assert listed(name="tests.apijobs.ParkedJob.") == []
    third = get_job(api, jobs[2]["_id"])["enqueued"]["at"]
    assert listed(since=iso(third)) == all_ids[2:]
    assert listed(until=iso(third)) == all_ids[:2]
    assert listed(since=iso(third), until=iso(third, up=True)) == [
        all_ids[2]]
    # counted right too (an aggregation's $match on NX compares
    # datetimes wrongly)
    assert [page(api, token, user=user, **span)["total_count"] for span in (
        {"since": iso(third)}, {"until": iso(third)},
        {"since": iso(third), "until": iso(third, up=True)})] == [3, 2, 1]
    assert ids(page(api, token, user=unique("nobody"))) == []


def test_listing_sort(api, parked):
    user, token, jobs = parked
    all_ids = [job["_id"] for job in jobs]
    assert ids(page(api, token, user=user, sort="-enqueued.at")) == \
        all_ids[::-1]
    assert ids(page(api, token, user=user, sort="+enqueued.at")) == all_ids
    # a + sent unencoded arrives as a space
    response = api.request("GET", API + "/job?user=%s&sort=+enqueued.at"
                           % user, token=token)
    assert ids(response.json()) == all_ids
    by_state = page(api, token, user=user, sort="-state")["data"]
    assert [doc["state"] for doc in by_state] == ["pending"] * 3 + [
        "killed"] * 2


def test_listing_masks_jobs_the_user_may_not_read(api, parked):
    user, _, jobs = parked
    _, stranger = api.create_user([HELPER + "/r"])
    # filters see readable jobs only: nothing learnt about the user
    body = page(api, stranger, user=user)
    assert body["total_count"] == 0 and body["data"] == []
    listing = page(api, stranger, per_page=1000)["data"]
    ours = {job["_id"] for job in jobs}
    states = ["pending"] * 3 + ["killed"] * 2
    assert [doc for doc in listing if doc["_id"] in ours] == [
        {"_id": job["_id"], "name": "UnauthorizedJob", "state": state,
         "masked": True, "args": None} for job, state in zip(jobs, states)]
    error(action(api, "GET", jobs[0]["_id"], token=stranger), 403,
          "may not read", jobs[0]["_id"])
    shown = page(api, api.admin, user=user)["data"]
    assert [doc["name"] for doc in shown] == [PARKED] * 5
    assert [doc["args"] for doc in shown] == [{"i": i} for i in range(5)]


def test_listing_the_journal(api, api_worker):
    name, token = api.create_user([HELPER + "/x"])
    jobs = [enqueue(api, NOOP, token=token, i=i) for i in range(3)]
    for job in jobs:
        wait_job(api, job["_id"], "complete", journaled=True)
    body = page(api, token, user=name, source="journal", sort="-_id")
    assert ids(body) == [job["_id"] for job in jobs][::-1]
    assert {doc["state"] for doc in body["data"]} == {"complete"}
    assert page(api, token, user=name)["total_count"] == 0


# detail ---------------------------------------------------------------------

def test_detail(api, parked):
    _, token, jobs = parked
    doc = get_job(api, jobs[0]["_id"], token=token)
    assert doc["state"] == "pending" and "journaled" not in doc
    assert doc["args"] == {"i": 0} and doc["age"] >= 0
    killed = get_job(api, jobs[3]["_id"], token=token)
    assert killed["state"] == "killed" and killed["flags"]["killed"]
    for method, verb in (("GET", ""), ("GET", "log"), ("PUT", "kill"),
                         ("PUT", "restart"), ("DELETE", "")):
        error(action(api, method, "0" * 24, verb), 404,
              "job %s not found" % ("0" * 24))
    for bad in ("123", "z" * 24, "0" * 25):
        error(action(api, "GET", bad), 404, "no route")


# kill, restart, remove ------------------------------------------------------

def test_kill_a_running_job_and_remove_it(api, api_worker):
    job = enqueue(api, DUMMY, sleep=30, loop_time=0.2, tag=unique())
    running = wait_job(api, job["_id"], "running")
    # a running job's runtime and age are seconds so far
    assert 0 <= running["runtime"] <= running["age"] < 30
    response = action(api, "PUT", job["_id"], "kill")
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"_id": job["_id"], "killed": True}
    killed = wait_job(api, job["_id"], "killed", timeout=15)
    assert killed["flags"]["killed"] and "journaled" not in killed
    assert killed["prog"]["value"] < 1.0
    error(action(api, "PUT", job["_id"], "kill"), 409, job["_id"],
          "killed: nothing to kill")
    response = action(api, "DELETE", job["_id"])
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"_id": job["_id"], "removed": True}
    removed = get_job(api, job["_id"])
    assert removed["journaled"] is True and removed["removed_at"]
    assert removed["flags"]["removed"]
    assert job["_id"] not in ids(page(api, name=DUMMY_NAME, per_page=1000))
    error(action(api, "DELETE", job["_id"]), 409,
          "killed (removed) and no longer in the queue: it cannot be "
          "removed")


def test_remove_a_running_job(api, api_worker):
    job = enqueue(api, DUMMY, sleep=3, loop_time=0.2, tag=unique())
    wait_job(api, job["_id"], "running")
    assert action(api, "DELETE", job["_id"]).status_code == 200
    # the run goes on to its end, then the job is journaled
    gone = wait_job(api, job["_id"], "complete", journaled=True, timeout=30)
    assert gone["removed_at"] and gone["flags"]["removed"]
    assert job["_id"] not in ids(page(api, name=DUMMY_NAME, per_page=1000))


def test_remove_a_pending_job(api, parked):
    _, token, _ = parked
    job = enqueue(api, PARKED, token=token, i=unique())
    response = action(api, "DELETE", job["_id"], token=token)
    assert response.status_code == 200, response.text
    gone = get_job(api, job["_id"])
    assert gone["journaled"] is True and gone["state"] == "removed"
    assert gone["flags"]["removed"]
    assert job["_id"] in ids(page(api, token, source="journal",
                                  name=PARKED, since=iso(
                                      gone["enqueued"]["at"])))


def test_finished_jobs_cannot_be_changed(api, api_worker):
    job = enqueue(api, NOOP, tag=unique())
    wait_job(api, job["_id"], "complete", journaled=True)
    for method, verb, done in (("PUT", "kill", "killed"),
                               ("PUT", "restart", "restarted"),
                               ("DELETE", "", "removed")):
        error(action(api, method, job["_id"], verb), 409,
              "job %s is complete and no longer in the queue: it cannot "
              "be %s" % (job["_id"], done))


def test_restart_a_killed_job_runs_it_again(api, api_worker, gate):
    job = enqueue(api, GATE, gate=gate, stubborn=True)
    pid = running_pid(api, job, gate)
    assert action(api, "PUT", job["_id"], "kill").status_code == 200
    # it ignores SIGTERM: it runs for the worker's kill grace (1 s)
    error(action(api, "PUT", job["_id"], "kill"), 409,
          "job %s is running and already asked to stop" % job["_id"])
    wait_job(api, job["_id"], "killed")
    wait_for(lambda: not alive(pid), 5, message="the job process to end")
    open_gate(gate)
    response = action(api, "PUT", job["_id"], "restart")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    new_id = data["new_id"]
    assert data["restarted"] is True and new_id != job["_id"]
    new = wait_job(api, new_id, "complete", journaled=True)
    assert new["args"] == job["args"]
    assert new["enqueued"]["parent_id"] == job["_id"]
    old = get_job(api, job["_id"])
    assert old["journaled"] is True and old["state"] == "killed"
    assert old["enqueued"]["child_id"] == new_id
    error(action(api, "PUT", job["_id"], "restart"), 409,
          "restarted as %s" % new_id)


def test_restart_a_failed_job_keeps_its_id(api, api_worker):
    job = enqueue(api, "tests.apijobs.FailOnceJob", tag=unique())
    failed = wait_job(api, job["_id"], "failed")
    assert "the first trial fails" in failed["last_error"]["exception"]
    response = action(api, "PUT", job["_id"], "restart")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["new_id"] == job["_id"]
    done = wait_job(api, job["_id"], "complete", journaled=True)
    assert done["trial"] == 2


def test_restart_a_pending_job_is_409(api, parked):
    _, token, jobs = parked
    error(action(api, "PUT", jobs[0]["_id"], "restart", token=token), 409,
          "job %s is pending: only deferred, failed, killed, inactive, "
          "error jobs can be restarted" % jobs[0]["_id"])
    assert get_job(api, jobs[0]["_id"])["state"] == "pending"


def test_changing_a_job_needs_execute_permission(api, parked):
    _, _, jobs = parked
    name, reader = api.create_user([r"job://tests\.apijobs/r"])
    for method, verb in (("PUT", "kill"), ("PUT", "restart"),
                         ("DELETE", "")):
        error(action(api, method, jobs[0]["_id"], verb, token=reader), 403,
              name, "may not execute", jobs[0]["_id"])
    assert get_job(api, jobs[0]["_id"], token=reader)["state"] == "pending"


# the job registry -----------------------------------------------------------

@pytest.fixture(scope="module")
def registry(api):
    """``sys_job`` filled by ``coco --jobs --introspect``."""
    subprocess.run([sys.executable, "-m", "core4.script.coco", "--jobs",
                    "--introspect"], env=api.env, cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    return [doc["_id"] for doc in api.db.sys_job.find({"valid": True})]


def test_job_list_shows_what_the_user_may_execute(api, registry):
    assert DUMMY_NAME in registry and NOOP in registry

    def listed(token, **params):
        response = api.request("GET", API + "/job/list", token=token,
                               params=params)
        assert response.status_code == 200, response.text
        return [doc["name"] for doc in response.json()["data"]]
    api.db.sys_job.insert_one({
        "_id": "core4.gone.GoneJob", "name": "core4.gone.GoneJob",
        "project": "core4", "valid": False, "exception": "not found"})
    try:
        everything = listed(api.admin)
    finally:
        api.db.sys_job.delete_one({"_id": "core4.gone.GoneJob"})
    assert everything == sorted(registry)
    entry = [doc for doc in api.request(
        "GET", API + "/job/list", token=api.admin).json()["data"]
        if doc["name"] == DUMMY_NAME][0]
    assert entry["project"] == "core4" and entry["author"] == "mra"
    assert entry["doc"].startswith("Sleep for ``sleep`` seconds")
    _, dummy = api.create_user([r"job://core4\.queue\.helper\.job\.example"
                                r"\.DummyJob/x"])
    assert listed(dummy) == [DUMMY_NAME]
    _, reader = api.create_user([HELPER + "/r"])
    assert listed(reader) == []
    assert listed(api.admin, search="*dummyjob") == [DUMMY_NAME]
    assert listed(api.admin, search="core4.queue.helper.job.example.?oopJob"
                  ) == [NOOP]
    assert listed(api.admin, search="DummyJob") == []
    assert listed(api.admin, search="([") == []


def test_args_the_database_refuses_are_a_4xx(api):
    nested = {"leaf": 1}
    for _ in range(150):
        nested = {"n": nested}
    response = api.request("POST", API + "/job", token=api.admin, json={
        "qual_name": "core4.queue.helper.job.DummyJob",
        "args": {"deep": nested, "tag": unique()}})
    # the body parser, the job's validation or the database refuses it:
    # whichever does, the client gets a one-line 4xx, never a 500
    assert 400 <= response.status_code < 500, response.text
    assert "\n" not in response.json()["message"]
