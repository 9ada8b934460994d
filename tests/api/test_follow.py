"""Following a job over HTTP (GET /job/<id>/follow, server-sent events)
and reading its log and output, with the package's real app server and
worker."""

import pytest

from tests.api.conftest import API, unique
from tests.support import wait_for
from tests.apijobs.client import (DUMMY, DUMMY_NAME, GATE, NOOP, enqueue,
                                  error, events, wait_job)


def follow(api, _id, token=None, on_event=None):
    """Follow job ``_id``; return the response and its events."""
    response = api.request("GET", API + "/job/%s/follow" % _id,
                           token=token or api.admin, stream=True,
                           timeout=60)
    with response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith(
            "text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        return events(response, on_event)


@pytest.fixture
def gate(tmp_path):
    """The path of a gate file a :class:`tests.apijobs.GateJob` waits
    for."""
    return str(tmp_path / unique("gate"))


def test_follow_runs_to_complete_with_rising_progress(api, api_worker):
    job = enqueue(api, DUMMY, sleep=1, loop_time=0.1, tag=unique())
    stream = follow(api, job["_id"])
    names = [name for name, _ in stream]
    assert names[0] == "state" and names[-1] == "close"
    assert names.count("close") == 1
    states = [data for name, data in stream if name == "state"]
    assert all(data["_id"] == job["_id"] for data in states)
    assert states[-1]["state"] == "complete"
    assert "running" in [data["state"] for data in states]
    progress = [data["prog"]["value"] for data in states]
    assert progress == sorted(progress), progress
    assert progress[-1] == 1.0
    assert any(0.0 < value < 1.0 for value in progress), progress
    assert stream[-1][1] == {"_id": job["_id"], "state": "complete",
                             "timeout": False}
    messages = [data["message"] for name, data in stream if name == "log"]
    assert messages[0] == "start execution"
    assert messages[-1] == "done execution with [complete]"


def test_log_events_arrive_while_the_job_runs(api, api_worker, gate):
    """The job waits for the gate until the client has received its first
    log record: the record must have been streamed live."""
    job = enqueue(api, GATE, gate=gate)
    opened = []

    def on_event(name, data):
        if name == "log" and data["message"].startswith("waiting for gate"):
            assert not opened
            with open(gate, "w"):
                pass
            opened.append(True)
    stream = follow(api, job["_id"], on_event=on_event)
    assert opened, stream
    logs = [data for name, data in stream if name == "log"]
    assert [data["message"] for data in logs] == [
        "start execution", "waiting for gate %s" % gate, "gate open",
        "done execution with [complete]"]
    assert all(data["identifier"] == job["_id"] and
               data["qual_name"] == GATE and data["level"] == "INFO"
               for data in logs)
    waiting = stream.index(("log", logs[1]))
    complete = [i for i, (name, data) in enumerate(stream)
                if name == "state" and data["state"] == "complete"]
    assert complete and waiting < complete[0]
    assert stream[-1] == ("close", {"_id": job["_id"], "state": "complete",
                                    "timeout": False})


def test_late_records_of_a_failing_job_are_streamed(api, api_worker,
                                                    gate):
    """A failing job's DEBUG records reach the log at its end, after later
    records were streamed: they still come, before ``close``."""
    job = enqueue(api, GATE, gate=gate, fail=True)

    def on_event(name, data):
        if name == "log" and data["message"].startswith("waiting for gate"):
            with open(gate, "w"):
                pass
    stream = follow(api, job["_id"], on_event=on_event)
    logs = [(data["level"], data["message"]) for name, data in stream
            if name == "log"]
    assert ("DEBUG", "context of the failure") in logs, logs
    assert ("CRITICAL", "done execution with [error]") in logs, logs
    assert stream[-1] == ("close", {"_id": job["_id"], "state": "error",
                                    "timeout": False})
    failed = [data for name, data in stream if name == "log"
              and data["level"] == "CRITICAL"][0]
    assert "failed on purpose" in failed["exception"]["info"]


def test_follow_streams_every_record_of_a_chatty_job(api, api_worker):
    """More records than one poll reads: each comes once, in order."""
    job = enqueue(api, "tests.apijobs.ChattyJob", n=2500)
    stream = follow(api, job["_id"])
    messages = [data["message"] for name, data in stream if name == "log"]
    assert messages == ["start execution"] + [
        "record %d" % i for i in range(2500)] + [
        "done execution with [complete]"]
    assert stream[-1][0] == "close"


def test_follow_a_finished_job_replays_and_closes(api, api_worker):
    job = enqueue(api, DUMMY, sleep=0.2, tag=unique())
    wait_job(api, job["_id"], "complete", journaled=True)
    stream = follow(api, job["_id"])
    assert [name for name, _ in stream] == ["state", "log", "log", "close"]
    state = stream[0][1]
    assert state["state"] == "complete" and state["journaled"] is True
    assert state["prog"]["value"] == 1.0
    assert [data["message"] for name, data in stream if name == "log"] == [
        "start execution", "done execution with [complete]"]
    assert stream[-1][1]["state"] == "complete"


def test_client_going_away_ends_the_stream_quietly(api, api_worker, gate):
    logged = len(api.output())
    job = enqueue(api, GATE, gate=gate)
    response = api.request("GET", API + "/job/%s/follow" % job["_id"],
                           token=api.admin, stream=True)
    lines = response.iter_lines(decode_unicode=True)
    assert next(lines) == "event: state"
    response.close()
    wait_job(api, job["_id"], "running")
    with open(gate, "w"):
        pass
    wait_job(api, job["_id"], "complete", journaled=True)
    assert "Traceback" not in api.output()[logged:]


def test_follow_errors(api, api_worker):
    error(api.request("GET", API + "/job/%s/follow" % ("0" * 24),
                      token=api.admin), 404, "job %s not found" % ("0" * 24))
    error(api.request("GET", API + "/job/nojob/follow", token=api.admin),
          404, "no route")
    job = enqueue(api, NOOP, tag=unique())
    name, token = api.create_user(["job://tests/r"])
    error(api.request("GET", API + "/job/%s/follow" % job["_id"],
                      token=token), 403, name, "may not read", job["_id"])
    error(api.request("GET", API + "/job/%s/follow" % job["_id"]), 401,
          "login required")


def test_log_has_the_records_of_the_job_only(api, api_worker, gate):
    with open(gate, "w"):
        pass
    job = enqueue(api, GATE, gate=gate)
    other = enqueue(api, GATE, gate=gate, other=True)
    wait_job(api, job["_id"], "complete", journaled=True)
    wait_job(api, other["_id"], "complete", journaled=True)
    url = API + "/job/%s/log" % job["_id"]
    response = api.request("GET", url, token=api.admin)
    assert response.status_code == 200, response.text
    records = response.json()["data"]
    assert [r["message"] for r in records] == [
        "start execution", "waiting for gate %s" % gate, "gate open",
        "done execution with [complete]"]
    assert {r["identifier"] for r in records} == {job["_id"]}
    assert [r["created"] for r in records] == sorted(
        r["created"] for r in records)
    latest = api.request("GET", url, token=api.admin,
                         params={"limit": 2}).json()["data"]
    assert [r["message"] for r in latest] == [
        "gate open", "done execution with [complete]"]
    for limit in (0, 10001):
        error(api.request("GET", url, token=api.admin,
                          params={"limit": limit}), 400,
              "limit must be 1 to 10000")
    error(api.request("GET", url, token=api.admin,
                      params={"limit": "many"}), 400, "limit", "many")


def test_stdout_is_the_captured_output(api, api_worker):
    job = enqueue(api, DUMMY, sleep=0.5, loop_time=0.2, tag=unique())
    wait_job(api, job["_id"], "complete", journaled=True)
    response = api.request("GET", API + "/job/%s/stdout" % job["_id"],
                           token=api.admin)
    assert response.status_code == 200, response.text
    lines = response.json()["data"].splitlines()
    assert len(lines) >= 2
    for number, line in enumerate(lines, 1):
        assert line.startswith("line %d at " % number), lines
        assert "progress" in line
    quiet = enqueue(api, NOOP, tag=unique())
    wait_job(api, quiet["_id"], "complete", journaled=True)
    assert api.request("GET", API + "/job/%s/stdout" % quiet["_id"],
                       token=api.admin).json()["data"] == ""
    error(api.request("GET", API + "/job/%s/stdout" % ("f" * 24),
                      token=api.admin), 404, "not found")


def test_stdout_shows_output_while_the_job_runs(api, api_worker, gate):
    """What a running job printed is readable before it ends."""
    job = enqueue(api, GATE, gate=gate)

    def printed():
        response = api.request("GET", API + "/job/%s/stdout" % job["_id"],
                               token=api.admin)
        assert response.status_code == 200, response.text
        return response.json()["data"]
    try:
        assert wait_for(printed, 20, message="output of the running job") \
            == "waiting for gate\n"
        doc = api.request("GET", API + "/job/" + job["_id"],
                          token=api.admin).json()["data"]
        assert doc["state"] == "running"
    finally:
        open(gate, "w").close()
    wait_job(api, job["_id"], "complete", journaled=True)
    assert printed().startswith("waiting for gate\n")  # and the rest


def test_reading_needs_read_permission(api, api_worker):
    job = enqueue(api, DUMMY, sleep=0.2, tag=unique())
    wait_job(api, job["_id"], "complete", journaled=True)
    _, reader = api.create_user(["job://%s/r" % DUMMY_NAME.replace(
        ".", r"\.")])
    _, stranger = api.create_user(["job://tests/x"])
    for part in ("log", "stdout"):
        url = API + "/job/%s/%s" % (job["_id"], part)
        assert api.request("GET", url, token=reader).status_code == 200
        error(api.request("GET", url, token=stranger), 403, "may not read")


def test_reconnect_with_last_event_id_resumes_after_that_record(
        api, api_worker):
    """A browser's EventSource reconnects with Last-Event-ID: it gets the
    records after that one, not the whole log again."""
    job = enqueue(api, "tests.apijobs.ChattyJob", n=20)
    first = follow(api, job["_id"])
    logged = [data for name, data in first if name == "log"]
    assert len(logged) == 22
    response = api.request("GET", API + "/job/%s/follow" % job["_id"],
                           token=api.admin, stream=True, timeout=60,
                           headers={"Last-Event-ID": logged[9]["_id"]})
    with response:
        assert response.status_code == 200
        again = events(response)
    assert [data["_id"] for name, data in again if name == "log"] == [
        data["_id"] for data in logged[10:]]
    assert again[-1][0] == "close"
