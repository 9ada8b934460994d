"""Run core4 operations inside a project's environment.

A job class may only be importable in its project's ``.venv`` (it imports
packages installed only there). ``coco`` running elsewhere then asks the
project's python to do the work: ``python -m core4.project.remote
MODULE:FUNCTION`` with a JSON payload on stdin, answering one JSON object
on stdout (what the function returns for the payload). Errors come back as
core4 errors of the same class and message. The operations are the
callers' own functions (enqueuing a job, introspecting its job classes).
"""

import importlib
import json
import os
import subprocess
import sys

import core4.error
from core4.project.home import project_root, venv_python


def run_remote(config, project, function, payload, timeout=120):
    """Call ``function`` (a module-level function, by its module and name)
    with ``payload`` in ``project``'s environment; return its answer or
    raise the core4 error it reported (its messages name the function)."""
    op = "%s:%s" % (function.__module__, function.__qualname__)
    name = function.__name__
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
                                     % (project, name, timeout)) from None
    return read_answer(proc, "project %s: %s failed in %s" % (
        project, name, python))


def read_answer(proc, failed):
    """Return the JSON answer a finished ``python -m core4.project.remote``
    process printed last, or raise the core4 error it reported; without an
    answer, a :class:`~core4.error.Core4UserError` that starts with
    ``failed`` and ends with the child's last line of stderr."""
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise core4.error.Core4UserError("%s: %s" % (failed, last)) \
            from None
    if "error" in answer:
        cls = getattr(core4.error, answer["error"], None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = core4.error.Core4UserError
        raise cls(answer["message"])
    return answer


def main():
    """``python -m core4.project.remote MODULE:FUNCTION``: answer one JSON
    line."""
    module, _, name = sys.argv[1].partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
        answer = function(json.loads(sys.stdin.read() or "{}"))
    except Exception as exc:
        answer = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(answer, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
