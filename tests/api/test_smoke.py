"""The app server answers: login, listing, enqueue through a worker."""

from tests.api.conftest import API, unique
from tests.support import wait_for


def test_enqueue_and_complete_over_http(api, api_worker):
    response = api.request("POST", API + "/job", token=api.admin, json={
        "qual_name": "core4.queue.helper.job.DummyJob",
        "args": {"sleep": 0.2, "tag": unique()}})
    assert response.status_code == 201, response.text
    _id = response.json()["data"]["_id"]

    def complete():
        doc = api.request("GET", API + "/job/" + _id,
                          token=api.admin).json()["data"]
        return doc["state"] == "complete"
    wait_for(complete, 30, message="the job to complete")


def test_no_credentials_is_401(api):
    response = api.request("GET", API + "/job")
    assert response.status_code == 401
    assert response.json()["message"] == "login required"
