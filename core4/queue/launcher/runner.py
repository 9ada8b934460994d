"""Run one claimed job in the current process.

:func:`execute_claimed` runs the job and returns its *outcome* without
touching the job's document; :func:`core4.queue.lifecycle.apply_outcome`
records it. A worker's job process hands the outcome to its worker (which
records it with its own, pooled connection); ``execute()`` records it
itself through :func:`run_claimed`.

Every run writes one "done execution with [<state>]" record under the
job's ``_id``, naming the state it ends in (``logged`` in the outcome), at
the level of :data:`core4.queue.lifecycle.DONE_LEVELS`.
"""

import inspect
import sys

import pymongo.errors

from core4.error import (Core4Error, CoreDatabaseError, CoreJobDeferred,
                         CoreJobInvalid)
from core4.mongo import now, retrying
from core4.queue import lifecycle, secret, stamp, states
from core4.queue.launcher.progress import ProgressWriter
from core4.queue.loader import load_job_class, make_job


def check_signature(job):
    """Raise :class:`CoreJobInvalid` unless ``execute`` accepts the args."""
    try:
        inspect.signature(job.execute).bind(**job.args)
    except TypeError as exc:
        raise CoreJobInvalid("%s: bad arguments %r: %s" % (
            job.name, secret.masked(job.args, job.secret_names), exc)) \
            from None


def build_job(doc):
    """Return the job object of ``doc``, or an ``error`` outcome (see
    :func:`log_build_error` for its record)."""
    try:
        cls = load_job_class(doc["name"])
        job = cls.deserialise(doc)
        if isinstance(job.enqueued, dict):
            # a job enqueued before parent_id was always stored
            job.enqueued.setdefault("parent_id", None)
        job.validate()
        check_signature(job)
        return job, None
    except Core4Error as exc:
        error = lifecycle.error_document(message=str(exc))
    except Exception as exc:
        error = lifecycle.error_document(sys.exc_info())
        error["exception"] = "cannot start %s: %s: %s" % (
            doc["name"], type(exc).__name__, exc)
    return None, {"state": states.ERROR, "error": error,
                  "logged": states.ERROR}


def log_build_error(doc, outcome):
    """Write the "done execution with [error]" record of a job that could
    not be built (``outcome`` from :func:`build_job`)."""
    lifecycle.log_done({"name": doc["name"], "_id": doc["_id"],
                        "state": states.ERROR,
                        "last_error": outcome["error"]})


def execute_claimed(doc, queue_factory, gate=None):
    """Run the claimed job ``doc`` and return its outcome.

    The outcome of a job that ran holds ``ended_at``, the time its
    ``execute()`` returned. ``queue_factory()`` returns the
    :class:`CoreQueue` used for progress
    updates; it is only called when the job reports progress, so a job that
    never does opens no database connection. With ``gate``, the job is
    built (its module imported) and then ``gate()`` waits for its worker's
    word: False (it was not admitted) returns None before its
    ``execute()`` ran or anything was recorded.
    """
    job, outcome = build_job(doc)
    if gate is not None and not gate():
        return None
    if outcome is not None:
        log_build_error(doc, outcome)
        return outcome
    # secrets show as *** in the job's records, output, progress, errors
    with secret.masking(job.args[name] for name in job.secret_names) \
            as clean:
        outcome = _with_progress(job, doc, queue_factory, clean)
    chain = outcome.pop("chain", None)
    # when the job ended: its runtime, not when its worker recorded it
    ended = outcome.pop("ended_at")
    outcome = clean(outcome)
    if chain is not None:
        outcome["chain"] = chain
    outcome["ended_at"] = ended
    return outcome


def _with_progress(job, doc, queue_factory, clean):
    """Run the built ``job`` (see :func:`execute_claimed`); its progress
    reports are written in the background (:class:`ProgressWriter`)."""
    opened = []

    def write(value, message):
        try:
            if not opened:
                opened.append(queue_factory())
            lifecycle.record_progress(opened[0], doc, value, clean(message))
        except (pymongo.errors.PyMongoError, CoreDatabaseError) as exc:
            # progress is best effort: a database away for a moment (or
            # the embedded server being restarted) never fails the job
            job.logger.warning("progress not stored: %s", exc)

    progress = ProgressWriter(write)
    job.bind_progress(progress.put)
    try:
        return _execute(job, doc)
    finally:
        progress.close()


def _execute(job, doc):
    """Call the job's ``execute()``; return its outcome."""
    log = job.logger
    log.info("start execution")
    try:
        with stamp.running(job):
            job.execute(**job.args)
    except CoreJobDeferred as exc:
        ended = now()
        # the run's one "done execution" record names the state it ends in
        state = lifecycle.deferred_state(doc, ended)
        if state == states.INACTIVE:
            log.error("done execution with [inactive]: %s", exc)
        else:
            log.info("done execution with [deferred]: %s", exc)
        return {"state": states.DEFERRED, "message": str(exc),
                "ended_at": ended, "logged": state}
    except Exception:
        ended = now()
        # the job fails for good when this was its last attempt
        final = states.ERROR if doc.get("attempts_left", 1) <= 1 \
            else states.FAILED
        log.critical("done execution with [%s]", final, exc_info=True)
        return {"state": states.FAILED, "ended_at": ended, "logged": final,
                "error": lifecycle.error_document(sys.exc_info())}
    ended = now()
    log.info("done execution with [complete]")
    outcome = {"state": states.COMPLETE, "ended_at": ended,
               "logged": states.COMPLETE}
    if job.chain:
        outcome["chain"] = chain_documents(job)
    return outcome


def chain_documents(job):
    """Validated documents of the jobs to enqueue after ``job`` (built here,
    in the job's own environment, so project jobs can be chained)."""
    docs = []
    for name in job.chain:
        try:
            docs.append(make_job(name).serialise())
        except Exception as exc:
            job.logger.error("cannot chain %s: %s", name, exc)
    return docs


def run_claimed(queue, doc):
    """Run the claimed job in this process and record its outcome; return
    the job's final document (None if the lease was lost meanwhile)."""
    outcome = execute_claimed(doc, lambda: queue)
    outcome.pop("chain", None)  # execute() leaves nothing behind
    after = retrying(lifecycle.apply_outcome, queue, doc, outcome)
    lifecycle.journal_removed(queue, after)
    return after
