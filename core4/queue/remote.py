"""Enqueue a job anywhere: where its class cannot be imported here (it
imports packages installed only in its project's ``.venv``), in its
project's environment (:mod:`core4.project.remote`)."""

from bson import ObjectId

import core4.error
from core4.project.home import installed
from core4.project.remote import run_remote
from core4.queue.loader import make_job
from core4.queue.queue import CoreQueue


def enqueue_anywhere(queue, name, /, **kwargs):
    """Enqueue the job ``name``; where its class cannot be imported here,
    in its project's environment. Returns the new job's ``_id``."""
    return enqueue_as(queue, name, None, kwargs)


def enqueue_as(queue, name, by, kwargs, check=None):
    """Like :func:`enqueue_anywhere`, recording ``by`` (e.g. the API
    user) as the user who enqueued the job.

    ``check(job)``, if given, is called with the validated job object
    before it is enqueued (its ``name`` is the class's own name, which
    differs from ``name`` for a re-exported class) and may raise to
    refuse it; the object then gets the enqueued job's fields. A job
    enqueued in its project's environment is not checked (its class
    cannot be loaded here).
    """
    try:
        job = make_job(name, **kwargs)
    except core4.error.CoreJobNotFound:
        project = str(name).split(".", 1)[0]
        if not installed(queue.config, project):
            raise
    else:
        if check is not None:
            check(job)
        return queue.submit(job, by=by)._id
    answer = run_remote(queue.config, project, enqueue,
                        {"name": name, "kwargs": kwargs, "by": by})
    return ObjectId(answer["_id"])


def enqueue(payload):
    """In a project's environment (:func:`~core4.project.remote.run_remote`):
    enqueue the job ``payload["name"]``."""
    job = CoreQueue().submit(make_job(payload["name"], **payload["kwargs"]),
                             by=payload.get("by"))
    return {"_id": str(job._id)}
