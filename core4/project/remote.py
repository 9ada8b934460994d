"""Run core4 operations inside a project's environment.

A job class may only be importable in its project's ``.venv`` (it imports
packages installed only there). ``coco`` running elsewhere then asks the
project's python to do the work: ``python -m core4.project.remote OP`` with
a JSON payload on stdin, answering one JSON object on stdout. Errors come
back as core4 errors of the same class and message.
"""

import json
import os
import subprocess
import sys

import core4.error
from core4.project.home import installed, project_root, venv_python


def run_remote(config, project, op, payload, timeout=120):
    """Run ``op`` with ``payload`` in ``project``'s environment; return its
    answer or raise the core4 error it reported."""
    python = venv_python(project_root(config, project))
    if not os.path.exists(python):
        raise core4.error.Core4UserError(
            "project %s has no virtual environment: %s is missing" % (
                project, python))
    try:
        proc = subprocess.run(
            [python, "-P", "-m", "core4.project.remote", op],
            input=json.dumps(payload), capture_output=True, text=True,
            timeout=timeout)
    except subprocess.TimeoutExpired:
        raise core4.error.Core4Error("project %s: %s timed out after %d s"
                                     % (project, op, timeout)) from None
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise core4.error.Core4UserError(
            "project %s: %s failed in %s: %s" % (project, op, python, last))
    if "error" in answer:
        cls = getattr(core4.error, answer["error"], None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = core4.error.Core4UserError
        raise cls(answer["message"])
    return answer


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
    from bson import ObjectId
    from core4.queue.loader import make_job
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
    answer = run_remote(queue.config, project, "enqueue",
                        {"name": name, "kwargs": kwargs, "by": by})
    return ObjectId(answer["_id"])


def _enqueue(payload):
    from core4.queue.loader import make_job
    from core4.queue.queue import CoreQueue
    job = CoreQueue().submit(make_job(payload["name"], **payload["kwargs"]),
                             by=payload.get("by"))
    return {"_id": str(job._id)}


def _introspect(payload):
    from core4.project.introspect import collect
    return {"jobs": collect(payload["package"])}


OPERATIONS = {"enqueue": _enqueue, "introspect": _introspect}


def main():
    """``python -m core4.project.remote OP``: answer one JSON line."""
    op = sys.argv[1]
    try:
        answer = OPERATIONS[op](json.loads(sys.stdin.read() or "{}"))
    except Exception as exc:
        answer = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(answer, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
