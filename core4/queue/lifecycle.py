"""State transitions of a job document, shared by the worker and
:func:`core4.queue.helper.functool.execute`.

Every transition of a running job is fenced by the lease token written at
claim time (``locked.token``): a process that lost its lease (its worker was
declared dead and the job recovered) can no longer change the job.
"""

import logging
import traceback
import uuid

import pymongo
import pymongo.errors

from core4.base import hostname
from core4.logger.adapter import get_logger
from core4.mongo import elapsed, now, seconds, to_datetime
from core4.queue import states


#: ``max_lost`` of jobs enqueued before it existed
DEFAULT_MAX_LOST = 3

#: the level of the "done execution with [state]" record of each state a
#: run (or a deferred job's inactivation) ends in
DONE_LEVELS = {states.COMPLETE: logging.INFO, states.DEFERRED: logging.INFO,
               states.FAILED: logging.CRITICAL,
               states.ERROR: logging.CRITICAL, states.KILLED: logging.ERROR,
               states.INACTIVE: logging.ERROR}


def log_done(doc, message=None):
    """Write the one "done execution with [<state>]" record of the job
    ``doc`` (under the job's ``_id``), at the level of its state (see
    :data:`DONE_LEVELS`); ``message`` defaults to its ``last_error``. The
    job process writes it for runs that ended there; this is for the ends
    that only the worker sees (killed, lost, not started, inactive)."""
    state = doc["state"]
    if message is None:
        message = (doc.get("last_error") or {}).get("exception")
    get_logger(doc["name"], doc["_id"]).log(
        DONE_LEVELS.get(state, logging.WARNING),
        "done execution with [%s]%s", state,
        ": %s" % message if message else "")


def new_lease(worker, pid=None):
    """Return the ``locked`` sub-document of a freshly claimed job."""
    at = now()
    return {"worker": worker, "hostname": hostname(), "pid": pid,
            "at": at, "heartbeat": at, "token": uuid.uuid4().hex}


def claim_update(lease, at, first=None):
    """Return the update that moves a claimed job to ``running``; ``first``
    tells whether it is the job's first start (sets ``first_started_at``),
    None if unknown (then ``$min`` decides)."""
    fields = {"state": states.RUNNING, "locked": lease, "started_at": at}
    update = {"$set": fields, "$inc": {"trial": 1}}
    if first:
        fields["first_started_at"] = at
    elif first is None:
        update["$min"] = {"first_started_at": at}
    return update


def claim_by_id(queue, _id, worker):
    """Claim one specific pending job (used by ``execute()``)."""
    lease = new_lease(worker)
    return queue.sys.queue.find_one_and_update(
        {"_id": _id, "state": {"$in": list(states.CLAIMABLE)}},
        claim_update(lease, lease["at"]),
        return_document=pymongo.ReturnDocument.AFTER)


def fence(doc):
    """Filter matching ``doc`` only while its lease is unchanged."""
    return {"_id": doc["_id"], "locked.token": doc["locked"]["token"]}


def error_document(exc_info=None, message=None):
    """Return a ``last_error`` sub-document for an exception or a message."""
    if exc_info is not None:
        exc_type, exc, tb = exc_info
        return {"exception": repr(exc), "timestamp": now(),
                "traceback": traceback.format_exception(exc_type, exc, tb)}
    return {"exception": message, "timestamp": now(), "traceback": None}


def _finish(doc, at):
    started = doc.get("started_at") or at
    return {"finished_at": at, "runtime": (doc.get("runtime") or 0.0)
            + max(elapsed(started, at), 0.0)}


def _update(queue, doc, update):
    return queue.sys.queue.find_one_and_update(
        fence(doc), update, return_document=pymongo.ReturnDocument.AFTER)


def ended_at(outcome):
    """When the job of ``outcome`` ended (its ``ended_at``, never later
    than now), or now if it does not say."""
    at = now()
    ended = to_datetime((outcome or {}).get("ended_at"))
    return at if ended is None or ended > at else ended


def set_complete(queue, doc, move=True, at=None):
    """Running → complete (the job ended ``at``, default now): the document
    moves to ``sys_journal`` (with ``move``; else the caller moves it, see
    :func:`journal_many`)."""
    at = at or now()
    fields = _finish(doc, at)
    fields.update({"state": states.COMPLETE, "prog.value": 1.0})
    after = _update(queue, doc, {"$set": fields, "$unset": {"locked": ""},
                                 "$inc": {"attempts_left": -1}})
    if after is not None and move:
        journal(queue, after)
    return after


def complete_many(queue, docs, ended=None):
    """Running → complete for several jobs in two round trips: one bulk
    write of fenced updates, one read of the jobs now complete (``ended``:
    when each job ended, by ``_id``; default now). Returns ``{_id:
    document}`` of those; a job that lost its lease meanwhile is not among
    them. The caller moves them to the journal (:func:`journal_many`)."""
    at = now()
    ended = {doc["_id"]: (ended or {}).get(doc["_id"]) or at for doc in docs}
    requests = []
    for doc in docs:
        fields = _finish(doc, ended[doc["_id"]])
        fields.update({"state": states.COMPLETE, "prog.value": 1.0})
        requests.append(pymongo.UpdateOne(
            fence(doc), {"$set": fields, "$unset": {"locked": ""},
                         "$inc": {"attempts_left": -1}}))
    queue.sys.queue.bulk_write(requests, ordered=False)
    # finished when this write says: completed here, not by a worker that
    # took a job over (nor by an earlier try of this write)
    return {doc["_id"]: doc for doc in queue.sys.queue.find(
        {"_id": {"$in": list(ended)}, "state": states.COMPLETE})
        if to_datetime(doc.get("finished_at")) == ended[doc["_id"]]}


def set_failed(queue, doc, error=None, message=None, at=None):
    """Running → failed (attempts left, retried after ``error_time``) or
    error (no attempts left); ``error`` is a ``last_error`` document, or
    give a ``message``; the job ended ``at`` (default now)."""
    error = error or error_document(message=message)
    at = at or now()
    fields = _finish(doc, at)
    left = doc.get("attempts_left", 1) - 1
    fields["last_error"] = error
    if left > 0:
        fields.update(state=states.FAILED,
                      query_at=at + seconds(doc["error_time"]))
    else:
        fields.update(state=states.ERROR)
    return _update(queue, doc, {"$set": fields, "$unset": {"locked": ""},
                                "$inc": {"attempts_left": -1}})


def set_error(queue, doc, error=None, message=None, at=None):
    """Running → error at once, whatever attempts are left (the job cannot
    start: unknown class, bad arguments); the job ended ``at`` (default
    now)."""
    error = error or error_document(message=message)
    at = at or now()
    fields = _finish(doc, at)
    fields.update(state=states.ERROR, last_error=error)
    return _update(queue, doc, {"$set": fields, "$unset": {"locked": ""}})


def inactive_at(doc):
    """When the deferring job ``doc`` becomes inactive: ``defer_max``
    seconds after its first start."""
    stored = to_datetime(doc.get("inactive_at"))
    if stored is not None:
        return stored
    first = to_datetime(doc.get("first_started_at") or doc["started_at"])
    return first + seconds(doc["defer_max"])


def deferred_state(doc, at):
    """The state a run of ``doc`` that deferred and ended ``at`` ends in:
    ``deferred``, or ``inactive`` once ``defer_max`` has passed."""
    return states.INACTIVE if at >= inactive_at(doc) else states.DEFERRED


def set_deferred(queue, doc, message, at=None):
    """Running → deferred (again after ``defer_time``), or inactive once
    ``defer_max`` has passed since the first start; the job ended ``at``
    (default now)."""
    at = at or now()
    fields = _finish(doc, at)
    fields["last_error"] = error_document(message=message)
    fields["inactive_at"] = inactive_at(doc)
    if deferred_state(doc, at) == states.INACTIVE:
        fields.update(state=states.INACTIVE)
    else:
        fields.update(state=states.DEFERRED,
                      query_at=at + seconds(doc["defer_time"]))
    return _update(queue, doc, {"$set": fields, "$unset": {"locked": ""}})


def apply_outcome(queue, doc, outcome, move=True):
    """Record what a job process reported (see
    :mod:`core4.queue.launcher.runner`): ``{"state":
    complete|failed|error|deferred, "error": last_error,
    "message": text}``. Returns the updated document, or None if the lease
    was lost meanwhile."""
    state = outcome["state"]
    if state == "lost":  # fenced by its watchdog (see launcher.watchdog)
        return set_lost(queue, doc, outcome.get("message") or "lost")
    at = ended_at(outcome)
    if state == states.COMPLETE:
        return set_complete(queue, doc, move, at=at)
    if state == states.DEFERRED:
        return set_deferred(queue, doc, outcome.get("message"), at=at)
    if state == states.ERROR:
        return set_error(queue, doc, outcome["error"], at=at)
    return set_failed(queue, doc, outcome["error"], at=at)


def set_lost(queue, doc, message):
    """Running → pending again at once: the job lost its worker (dead,
    stopped or cut off from the database), which is not the job's failure,
    so no attempt is used up. The ``lost`` count grows and ``lost_by`` names
    the worker; past ``max_lost`` losses (a job that kills its workers) the
    job ends in ``error`` instead."""
    max_lost = doc.get("max_lost") or DEFAULT_MAX_LOST
    at = now()
    fields = _finish(doc, at)
    worker = (doc.get("locked") or {}).get("worker")
    lost = doc.get("lost", 0) + 1
    fields.update(last_error=error_document(message=message), lost=lost)
    if lost > max_lost:
        fields.update(state=states.ERROR, last_error=error_document(
            message="%s; lost its worker %d times (max_lost %d): ended in "
            "error" % (message, lost, max_lost)))
    else:
        fields.update(state=states.PENDING, query_at=at)
    return _update(queue, doc, {"$set": fields, "$unset": {"locked": ""},
                                "$push": {"lost_by": worker}})


def set_killed(queue, doc, message="killed"):
    """Running → killed (the job process was stopped or vanished)."""
    at = now()
    fields = _finish(doc, at)
    fields.update(state=states.KILLED,
                  last_error=error_document(message=message))
    return _update(queue, doc, {"$set": fields, "$unset": {"locked": ""}})


def mark_started(queue, doc, pid):
    """Record the process id of the running job."""
    return _update(queue, doc, {"$set": {"locked.pid": pid}})


def record_progress(queue, doc, value, message):
    """Store progress and renew the job's heartbeat (while it runs under
    its lease: a late report never changes a job that ended)."""
    at = now()
    queue.sys.queue.update_one(
        dict(fence(doc), state=states.RUNNING),
        {"$set": {"prog": {"value": value, "message": message, "at": at},
                  "locked.heartbeat": at}})


def journal_many(queue, docs):
    """Move the completed ``docs`` to ``sys_journal`` in two round trips
    (idempotent: a document journaled before is replaced). A crash in
    between leaves them ``complete`` in the queue, where recovery finds and
    journals them."""
    if not docs:
        return
    try:
        queue.sys.journal.insert_many(docs, ordered=False)
    except pymongo.errors.BulkWriteError as exc:
        again = {error["index"] for error in exc.details["writeErrors"]
                 if error.get("code") == 11000}
        if len(again) != len(exc.details["writeErrors"]):
            raise
        for index in again:
            queue.sys.journal.replace_one({"_id": docs[index]["_id"]},
                                          docs[index], upsert=True)
    queue.sys.queue.delete_many({"_id": {"$in": [d["_id"] for d in docs]},
                                 "state": states.COMPLETE})


def journal_removed(queue, doc):
    """Move the job ``doc`` (after its run ended) to the journal if its
    removal was requested while it ran: it is never run again. A complete
    job moves there anyway. Returns True if it was moved here."""
    if doc is None or not doc.get("removed_at") or \
            doc["state"] in (states.RUNNING, states.COMPLETE):
        return False
    journal(queue, doc, removed=True)
    return True


def journal(queue, doc, removed=False):
    """Move ``doc`` to ``sys_journal`` (idempotent) and out of the queue;
    a job ``removed`` before it reached a final state is journaled in
    state ``removed`` (see :func:`~core4.queue.states.journaled_state`)."""
    stored = doc
    if removed:
        stored = dict(doc, state=states.journaled_state(doc["state"]))
    try:
        queue.sys.journal.insert_one(stored)
    except pymongo.errors.DuplicateKeyError:  # journaled before, interrupted
        queue.sys.journal.replace_one({"_id": doc["_id"]}, stored,
                                      upsert=True)
    queue.sys.queue.delete_one({"_id": doc["_id"], "state": doc["state"]})


def settle_interrupted(queue, job_id, log):
    """An outcome write found no lease: it may have gone through before a
    connection error (a worker retries recording an outcome as a whole).
    A complete job still in the queue moves to the journal; anything else
    was taken over by another worker."""
    doc = queue.sys.queue.find_one({"_id": job_id})
    if doc is not None and doc["state"] == states.COMPLETE:
        journal(queue, doc)
    elif doc is not None and doc["state"] == states.RUNNING:
        log.warning("job [%s] lost its lease before its outcome was "
                    "recorded", job_id)
