"""Run one claimed job in the current process and record its outcome.

Used by the job process a worker starts, and by ``execute()`` for
debugging in the user's own process.
"""

import os
import sys

from core4.error import Core4Error, CoreJobDeferred
from core4.queue import lifecycle
from core4.queue.loader import load_job_class


def run_claimed(queue, doc):
    """Execute the claimed job ``doc``; return its final document.

    The outcome is one of complete, failed, error, deferred or inactive.
    A job that cannot even be built (unknown class, bad arguments) ends in
    ``error`` with a ``last_error`` that says why.
    """
    try:
        cls = load_job_class(doc["name"])
        job = cls.deserialise(doc)
        job.validate()
    except Core4Error as exc:
        return lifecycle.set_error(queue, doc, str(exc))
    except Exception as exc:
        return lifecycle.set_error(
            queue, doc, "cannot start %s: %s: %s" % (
                doc["name"], type(exc).__name__, exc), sys.exc_info())
    started = lifecycle.mark_started(queue, doc, os.getpid()) or doc
    job.bind_progress(lambda value, message: lifecycle.record_progress(
        queue, started, value, message))
    log = job.logger
    log.info("start execution")
    try:
        job.execute(**job.args)
    except CoreJobDeferred as exc:
        after = lifecycle.set_deferred(queue, started, str(exc))
    except Exception:
        after = lifecycle.set_failed(queue, started, sys.exc_info())
        if after is not None:
            log.critical("done execution with [%s]", after["state"],
                         exc_info=True)
            return after
    else:
        after = lifecycle.set_complete(queue, started)
    if after is not None:
        log.info("done execution with [%s] after [%.2f] sec.",
                 after["state"], after.get("runtime") or 0.0)
    else:
        log.error("lost the lease of the job while it ran: outcome dropped")
    return after
