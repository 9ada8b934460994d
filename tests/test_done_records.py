"""One "done execution with [<state>]" record per run (issue 19, item 6),
under the job's ``_id``, at the level of the state the run ended in; the
worker's own records about the job say something else, or go to its
console only; a deferral is never an error. A job held back for lack of
resources gets one "skipped job" record. Real ``coco --worker`` processes
write to ``sys_log`` of the session's NX-27017 server."""

import logging

from core4.base import hostname
from core4.queue.queue import CoreQueue
from tests.support import let_worker_cycle, wait_for, wait_state

JOBS = "tests.rjobs.jobs."


def done_records(db, _id):
    """The "done execution" records of job ``_id``, oldest first, as
    ``(level, message)``."""
    return [(doc["level"], doc["message"]) for doc in db.sys_log.find(
        {"identifier": str(_id), "message": {"$regex": "^done execution"}})
        .sort([("created", 1), ("_id", 1)])]


def wait_records(db, _id, number, timeout=30):
    """Wait until job ``_id`` has ``number`` done records; return them."""
    return wait_for(lambda: len(done_records(db, _id)) >= number and
                    done_records(db, _id), timeout,
                    message="%d done record(s) of job %s" % (number, _id))


def worker_records(db, name):
    """Records the worker ``name`` wrote under its own identifier."""
    return list(db.sys_log.find(
        {"identifier": "%s@%s" % (name, hostname())}))


def release(db, key):
    """Let the gate job ``key`` end."""
    db.r_release.insert_one({"_id": key})


def test_one_record_per_run_with_its_state(db, start_worker):  # noqa: F811
    worker = start_worker("rec")
    queue = CoreQueue()
    complete = queue.enqueue(JOBS + "CompleteJob")._id
    failing = queue.enqueue(JOBS + "FailingJob", attempts=2,
                            error_time=1)._id
    deferring = queue.enqueue(JOBS + "DeferringJob", defer_time=1,
                              defer_max=1000)._id
    # a run past defer_max ends inactive: that is its one record
    expired = queue.enqueue(JOBS + "DeferringJob", key="expired",
                            defer_max=0.001)._id
    # waits 1000 s after its first run: the flag step inactivates it
    flagged = queue.enqueue(JOBS + "DeferringJob", key="flagged",
                            defer_time=1000, defer_max=2)._id
    killed = queue.enqueue(JOBS + "GateJob", key="killed")._id

    wait_state(db, complete, "complete", worker=worker)
    wait_state(db, failing, "error", timeout=30, worker=worker)
    wait_for(lambda: (db.sys_queue.find_one({"_id": deferring}) or {}).get(
        "trial", 0) >= 3 and db.sys_queue.find_one(
        {"_id": deferring})["state"] == "deferred", 30,
        message="three runs of the deferring job")
    wait_state(db, expired, "inactive", worker=worker)
    wait_state(db, flagged, "inactive", timeout=30, worker=worker)
    wait_for(lambda: db.r_report.find_one({"_id": "killed"}), 30,
             message="the gate job to run")
    assert queue.kill(killed) is True
    wait_state(db, killed, "killed", worker=worker)
    let_worker_cycle(db, worker, beats=2)  # records still on their way

    info, error, critical = "INFO", "ERROR", "CRITICAL"
    assert done_records(db, complete) == [
        (info, "done execution with [complete]")]
    assert done_records(db, failing) == [
        (critical, "done execution with [failed]"),
        (critical, "done execution with [error]")]
    trial = db.sys_queue.find_one({"_id": deferring})["trial"]
    assert done_records(db, deferring) == [
        (info, "done execution with [deferred]: not yet")] * trial
    assert done_records(db, expired) == [
        (error, "done execution with [inactive]: not yet")]
    assert done_records(db, flagged) == [
        (info, "done execution with [deferred]: not yet"),
        (error, "done execution with [inactive]: not yet")]
    assert done_records(db, killed) == [
        (error, "done execution with [killed]: killed by request")]

    # the worker's own records name none of these ends (its lines about
    # them go to its console) and never log a deferral as an error
    ids = [str(_id) for _id in (complete, failing, deferring, expired,
                                flagged, killed)]
    about_jobs = [doc for doc in worker_records(db, "rec")
                  if any(_id in doc["message"] for _id in ids)]
    assert about_jobs == []
    assert db.sys_log.count_documents(
        {"levelno": {"$gte": logging.ERROR},
         "message": {"$regex": "deferred"}}) == 0
    assert "job [%s]" % failing in worker.output()  # on its console


def test_one_skipped_record_for_a_held_back_job(db, start_worker):  # noqa
    worker = start_worker(
        "skip", CORE4_OPTION_worker__min_free_ram="!!int 99999999")
    queue = CoreQueue()
    held = queue.enqueue(JOBS + "CompleteJob")._id
    # many claim rounds (change-stream hints, the poll) meanwhile
    forced = [queue.enqueue(JOBS + "ParentIdJob", key="f%d" % n,
                            force=True)._id for n in range(3)]
    for _id in forced:
        wait_state(db, _id, "complete", worker=worker)
    let_worker_cycle(db, worker, beats=3)
    assert db.sys_queue.find_one({"_id": held})["state"] == "pending"

    def skipped():
        return [doc for doc in worker_records(db, "skip")
                if doc["message"].startswith("skipped job")]
    records = wait_for(skipped, 10, message="a skipped record")
    assert len(records) == 1, records
    assert records[0]["level"] == "INFO"
    assert records[0]["message"].startswith(
        "skipped job [%s] %sCompleteJob: not enough resources (available "
        "memory " % (held, JOBS)), records[0]["message"]
