"""Claims whose answer was lost (:mod:`core4.queue.claim`): the connection
broke after the server wrote the claim. The worker remembers the claim's
lease token and, once it reads its running jobs again, gives such jobs back
at once instead of leaving them to recovery after their lease. Runs on
every backend of ``fidelity_env``."""

import time

import pytest

from core4.queue import lifecycle, states
from core4.queue.claim import Claimer
from core4.queue.queue import CoreQueue

DUMMY = "core4.queue.helper.job.example.DummyJob"
WORKER = "w@h"


@pytest.fixture
def queue(fidelity_env):
    """A CoreQueue on a fresh database of the backend under test."""
    return CoreQueue()


def running_of(queue):
    return list(queue.sys.queue.find(
        {"locked.worker": WORKER, "state": states.RUNNING},
        {"killed_at": 1, "locked": 1, "last_error": 1}))


def test_a_claim_with_a_lost_answer_is_given_back(queue):
    lost = lifecycle.claim_by_id(queue, queue.enqueue(DUMMY, sleep=1)._id,
                                 WORKER)
    known = lifecycle.claim_by_id(queue, queue.enqueue(DUMMY, sleep=2)._id,
                                  WORKER)
    claimer = Claimer(queue, WORKER)
    claimer.uncertain[lost["locked"]["token"]] = time.monotonic()
    given = claimer.give_back_uncertain(running_of(queue), {known["_id"]},
                                        60)
    assert given == [lost["_id"]]
    doc = queue.sys.queue.find_one({"_id": lost["_id"]})
    assert doc["state"] == states.PENDING and doc["trial"] == 0
    assert "locked" not in doc
    # the job the worker runs keeps its lease; the token is forgotten
    doc = queue.sys.queue.find_one({"_id": known["_id"]})
    assert doc["state"] == states.RUNNING
    assert doc["locked"]["token"] == known["locked"]["token"]
    assert claimer.uncertain == {}


def test_only_the_uncertain_claims_token_counts(queue):
    """A job of the same worker name with another lease (an earlier run of
    a worker of that name, say) is left to recovery."""
    other = lifecycle.claim_by_id(queue, queue.enqueue(DUMMY, sleep=3)._id,
                                  WORKER)
    claimer = Claimer(queue, WORKER)
    claimer.uncertain["not-" + other["locked"]["token"]] = time.monotonic()
    assert claimer.give_back_uncertain(running_of(queue), set(), 60) == []
    doc = queue.sys.queue.find_one({"_id": other["_id"]})
    assert doc["state"] == states.RUNNING and doc["trial"] == 1
