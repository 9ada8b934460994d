"""Functions for working with jobs from Python code and notebooks."""

from core4.base import hostname
from core4.logger import setup_logging
from core4.queue import lifecycle
from core4.queue.queue import CoreQueue
from core4.queue.launcher.runner import run_claimed


def enqueue(job, /, **kwargs):
    """Enqueue ``job`` (class or qualified name); return its ``_id``."""
    return CoreQueue().enqueue(job, **kwargs)._id


def execute(job, /, **kwargs):
    """Run ``job`` once in this process and return its final document.

    The job runs in the current process (so breakpoints work, and its output
    is not captured), exactly one attempt. The returned document has state
    complete, failed, deferred, inactive or error (then with ``last_error``).
    Nothing is left behind in ``sys_queue`` or ``sys_journal``. Errors before
    execution (missing author, bad attribute, unknown job) raise.
    """
    queue = CoreQueue()
    setup_logging(queue.config)
    enqueued = queue.enqueue(job, **kwargs)
    try:
        doc = lifecycle.claim_by_id(queue, enqueued._id,
                                    "manual@%s" % hostname())
        if doc is not None:
            run_claimed(queue, doc)
        return queue.detail(enqueued._id)
    finally:
        queue.sys.queue.delete_one({"_id": enqueued._id})
        queue.sys.journal.delete_one({"_id": enqueued._id})
        queue.sys.stdout.delete_one({"_id": enqueued._id})
