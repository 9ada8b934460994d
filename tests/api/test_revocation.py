"""Revocation reaches open streams (issue 20, item 6): a follow stream
(``GET /job/<id>/follow``) and the dashboard's queue stream end within
seconds once their user is deactivated or deleted, or loses the
permission to read the job, instead of streaming on for up to an hour.

The package's app server and worker; the followed jobs are
:class:`tests.apijobs.ParkedJob` (pending for good: only a revocation or
the server's ``follow_timeout`` of an hour ends their stream).
"""

import threading
import time

import requests

from tests.api.conftest import API, unique
from tests.apijobs.client import PARKED, enqueue, events
from tests.support import wait_for

#: seconds a revoked stream may go on (the re-check runs every 3 s)
ENDS_WITHIN = 15


class Stream:
    """A server-sent event stream read in a thread: ``events`` so far,
    ``ended`` once the server closed it."""

    def __init__(self, url, token):
        self.response = requests.get(url, headers={
            "Authorization": "Bearer " + token}, stream=True,
            timeout=ENDS_WITHIN * 4)
        assert self.response.status_code == 200, self.response.text
        self.events = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        try:
            events(self.response, lambda *item: self.events.append(item))
        except requests.RequestException:
            pass
        finally:
            self.ended.set()

    def close(self):
        """Stop reading (the test is over)."""
        self.response.close()
        self._thread.join(10)


def _deactivate(api, name):
    doc = api.db.sys_role.find_one({"name": name})
    response = api.request("PUT", API + "/roles/%s" % doc["_id"],
                           token=api.admin, json={"is_active": False,
                                                  "etag": doc["etag"]})
    assert response.status_code == 200, response.text


def _strip(api, name):
    doc = api.db.sys_role.find_one({"name": name})
    response = api.request("PUT", API + "/roles/%s" % doc["_id"],
                           token=api.admin, json={"permissions": [],
                                                  "etag": doc["etag"]})
    assert response.status_code == 200, response.text


def _delete(api, name):
    doc = api.db.sys_role.find_one({"name": name})
    response = api.request("DELETE", API + "/roles/%s" % doc["_id"],
                           token=api.admin, headers={
                               "If-Match": doc["etag"]})
    assert response.status_code == 200, response.text


def _follow(api, token, job):
    stream = Stream(api.url + API + "/job/%s/follow" % job["_id"], token)
    wait_for(lambda: any(name == "state" for name, _ in stream.events), 30,
             message="the first state event")
    return stream


def _ends(stream, what):
    started = time.monotonic()
    try:
        assert stream.ended.wait(ENDS_WITHIN), (
            "the stream went on %d s after %s: %s" % (
                ENDS_WITHIN, what, stream.events[-3:]))
    finally:
        stream.close()
    return time.monotonic() - started


def test_follow_ends_within_seconds_of_deactivating_its_user(api,
                                                             api_worker):
    name, token = api.create_user(["job://tests\\.apijobs\\..*/r"])
    job = enqueue(api, PARKED, tag=unique())
    stream = _follow(api, token, job)
    _deactivate(api, name)
    _ends(stream, "deactivating %s" % name)
    last, data = stream.events[-1]
    assert last == "close", stream.events
    assert data["_id"] == job["_id"] and data["state"] == "pending"
    assert "no longer valid" in data["revoked"], data
    # and the user cannot open it again
    response = api.request("GET", API + "/job/%s/follow" % job["_id"],
                           token=token)
    assert response.status_code == 401


def test_follow_ends_when_the_read_permission_goes(api, api_worker):
    name, token = api.create_user(["job://tests\\.apijobs\\..*/r"])
    job = enqueue(api, PARKED, tag=unique())
    stream = _follow(api, token, job)
    _strip(api, name)
    _ends(stream, "removing the permission of %s" % name)
    last, data = stream.events[-1]
    assert last == "close" and "may no longer read" in data["revoked"], (
        stream.events)


def test_dashboard_queue_stream_ends_when_its_user_is_deleted(api):
    name, token = api.create_user([])
    stream = Stream(api.url + "/_dashboard/stream/queue", token)
    wait_for(lambda: any(name == "queue" for name, _ in stream.events), 30,
             message="the first queue event")
    _delete(api, name)
    _ends(stream, "deleting %s" % name)
    last, data = stream.events[-1]
    assert last == "revoked" and "no longer valid" in data["message"], (
        stream.events[-3:])
