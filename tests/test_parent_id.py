"""``enqueued.parent_id`` is always there (issue 19, item 3): None for a
job a user or the scheduler enqueued, the parent's ``_id`` for a restarted
or chained job; the same in the stored document and in the job object, also
inside a job run by a real ``coco --worker``."""

from core4.queue.job import CoreJob
from core4.queue.queue import CoreQueue
from core4.queue.remote import enqueue_anywhere
from tests.support import find_job, wait_for, wait_state

JOBS = "tests.rjobs.jobs."


def seen(db, key):
    """What the job run reported under ``key`` (waits for it)."""
    return wait_for(lambda: db.r_report.find_one({"_id": key}), 30,
                    message="report %s" % key)


def test_fresh_job_has_parent_id_none(db, core4_env):
    queue = CoreQueue()
    job = queue.enqueue(JOBS + "ParentIdJob", key="fresh")
    assert job.enqueued["parent_id"] is None
    stored = db.sys_queue.find_one({"_id": job._id})
    assert "parent_id" in stored["enqueued"]
    assert stored["enqueued"]["parent_id"] is None
    # the scheduler's way (coco --scheduler) enqueues the same
    scheduled = enqueue_anywhere(queue, JOBS + "CompleteJob")
    stored = db.sys_queue.find_one({"_id": scheduled})
    assert "parent_id" in stored["enqueued"]
    assert stored["enqueued"]["parent_id"] is None
    # a job object enqueued as it is
    job = queue.enqueue(queue_job())
    assert job.enqueued["parent_id"] is None


def queue_job():
    """A job object made by the user (not by name)."""
    from tests.rjobs.jobs import ParentIdJob
    job = ParentIdJob(key="object")
    assert isinstance(job, CoreJob)
    return job


def test_parent_id_in_running_jobs(db, start_worker):  # noqa: F811
    worker = start_worker()
    queue = CoreQueue()
    fresh = queue.enqueue(JOBS + "ParentIdJob", key="run")._id
    wait_state(db, fresh, "complete", worker=worker)
    assert seen(db, "run-1") == {"_id": "run-1", "has_key": True,
                                 "parent_id": None}

    # a restarted job: its parent's _id, in the job and its document
    failing = queue.enqueue(JOBS + "ParentIdJob", key="restart",
                            fail_first=True)._id
    wait_state(db, failing, "error", worker=worker)
    child = queue.restart(failing)
    assert child != failing
    doc = wait_state(db, child, "complete", worker=worker)
    assert doc["enqueued"]["parent_id"] == failing
    assert seen(db, "restart-2")["parent_id"] == failing

    # a chained job: the job that chained it
    parent = queue.enqueue(JOBS + "ChainingJob")._id
    wait_state(db, parent, "complete", worker=worker)
    query = {"enqueued.parent_id": {"$in": [parent]}}
    chained = wait_for(lambda: db.sys_queue.find_one(query) or
                       db.sys_journal.find_one(query), 30,
                       message="the chained job")["_id"]
    doc = wait_state(db, chained, "complete", worker=worker)
    assert doc["enqueued"]["parent_id"] == parent
    assert seen(db, "parent-1")["parent_id"] == parent
    assert find_job(db, fresh)["enqueued"]["parent_id"] is None
