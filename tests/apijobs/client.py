"""HTTP helpers of the job, follow and queue API tests: enqueue, read and
wait for jobs through the app server, check error envelopes and parse a
server-sent event stream."""

import json

from tests.api.conftest import API
from tests.support import wait_for

#: the re-exported name of the example job, and the name it is stored under
DUMMY = "core4.queue.helper.job.DummyJob"
DUMMY_NAME = "core4.queue.helper.job.example.DummyJob"
NOOP = "core4.queue.helper.job.example.NoopJob"
GATE = "tests.apijobs.GateJob"
PARKED = "tests.apijobs.ParkedJob"


def enqueue(api, qual_name, token=None, **args):
    """POST /job as ``token`` (default admin); return the new job's
    document (asserting 201)."""
    response = api.request("POST", API + "/job", token=token or api.admin,
                           json={"qual_name": qual_name, "args": args})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def get_job(api, _id, token=None):
    """GET /job/<id>; return the document (asserting 200)."""
    response = api.request("GET", API + "/job/%s" % _id,
                           token=token or api.admin)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_job(api, _id, *states, timeout=30, journaled=None):
    """Poll GET /job/<id> until the job is in one of ``states`` (and, if
    given, journaled or not); return its document."""
    seen = {}

    def reached():
        doc = get_job(api, _id)
        seen["doc"] = doc
        if doc["state"] in states and (
                journaled is None or bool(doc.get("journaled")) == journaled):
            return doc
        return None
    try:
        return wait_for(reached, timeout, message="job %s to be %s" % (
            _id, "/".join(states)))
    except AssertionError as exc:
        doc = seen.get("doc") or {}
        raise AssertionError("%s; it is %s (journaled %s), last_error %s" % (
            exc, doc.get("state"), doc.get("journaled"),
            doc.get("last_error"))) from None


def page(api, token=None, **params):
    """GET /job with ``params``; return the whole envelope (asserting
    200)."""
    response = api.request("GET", API + "/job", token=token or api.admin,
                           params=params)
    assert response.status_code == 200, response.text
    return response.json()


def error(response, status, *words):
    """Assert ``response`` is the error envelope of ``status`` whose
    one-line message contains each of ``words``; return the message."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status
    message = body["message"]
    assert isinstance(message, str) and message and "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def events(response, on_event=None):
    """Parse a text/event-stream ``response`` (sent with ``stream=True``)
    into ``[(event, data)]`` until the server ends it; ``data`` is decoded
    JSON. ``on_event(name, data)`` is called as each event arrives."""
    result, name, data = [], None, []
    for line in response.iter_lines(decode_unicode=True):
        if line is None:
            continue
        if line == "":
            if data:
                item = (name or "message", json.loads("\n".join(data)))
                result.append(item)
                if on_event is not None:
                    on_event(*item)
            name, data = None, []
        elif line.startswith(":"):
            continue  # a comment (keep-alive)
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    return result
