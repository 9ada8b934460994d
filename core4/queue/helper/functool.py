"""Functions for working with jobs from Python code and notebooks."""

from core4.base import hostname
from core4.config.folders import ensure_folders
from core4.logger import setup_logging
from core4.queue import lifecycle
from core4.queue.cookie import record_runtime
from core4.queue.queue import CoreQueue
from core4.queue.launcher.runner import run_claimed


def enqueue(job, /, **kwargs):
    """Enqueue ``job`` (class or qualified name); return its ``_id``."""
    return CoreQueue().enqueue(job, **kwargs)._id


def find_job(filter=None, **fields):
    """Return the documents in ``sys_queue`` that match the MongoDB query
    ``filter`` and the field values ``fields`` (``find_job(name="mypro.
    myjob.MyJob", state="error")``), oldest first."""
    query = dict(filter or {})
    query.update(fields)
    return list(CoreQueue().sys.queue.find(query).sort("_id", 1))


def remove_job(_id):
    """Remove the job ``_id`` (see :meth:`CoreQueue.remove
    <core4.queue.queue.CoreQueue.remove>`); return what that returns."""
    return CoreQueue().remove(_id)


def execute(job, /, **kwargs):
    """Run ``job`` once in this process and return its final document.

    The job runs in the current process (so breakpoints work, and its output
    is not captured), exactly one attempt. The returned document has state
    complete, failed, deferred, inactive or error (then with ``last_error``).
    Nothing is left behind in ``sys_queue`` or ``sys_journal``; a complete
    run records ``last_runtime`` in the job's cookie, as a worker does.
    Errors before execution (missing author, bad attribute, unknown job)
    raise. The data folders (``folder.root`` and the ``transfer``,
    ``process``, ``archive`` and ``temp`` folders in it) are created first.
    """
    queue = CoreQueue()
    setup_logging(queue.config)
    ensure_folders(queue.config)
    enqueued = queue.enqueue(job, **kwargs)
    try:
        doc = lifecycle.claim_by_id(queue, enqueued._id,
                                    "manual@%s" % hostname())
        if doc is not None:
            record_runtime(queue.sys.cookie, [run_claimed(queue, doc)])
        return queue.detail(enqueued._id)
    finally:
        queue.sys.queue.delete_one({"_id": enqueued._id})
        queue.sys.journal.delete_one({"_id": enqueued._id})
        queue.sys.stdout.delete_one({"_id": enqueued._id})
