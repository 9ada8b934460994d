"""Enqueue a job by name: here, in a child process, or in its project's
environment.

:func:`enqueue_anywhere` (``coco --enqueue``, the scheduler: names their
operators chose) imports the job class here; where it cannot be imported
(it imports packages installed only in its project's ``.venv``), it
enqueues in the project's environment (:mod:`core4.project.remote`).

:func:`enqueue_as` (``POST /job``: a name a *user* sent) never imports a
module the name chose into this process (the app server), as importing
runs the module's code:

1. a name the job registry ``sys_job`` lists as a valid job class (written
   by ``coco --jobs --introspect`` and the scheduler), or a name whose
   module re-exports such a class (``from .example import DummyJob``, read
   from the source), is a known class: it is loaded here as before;
2. any other name is first looked up in the source (:func:`locate`, which
   finds the module's file like ``import`` would, without running
   anything): a module that does not exist, is built in, or binds no such
   name answers 404 (:class:`~core4.error.CoreJobNotFound`);
3. else (``api.enqueue_unregistered``, default true) the job is made and
   validated in a child process of this environment, or of its project's
   environment if it is an installed project (:func:`validate`): the child
   answers the job's document, this process checks it (``check``) and
   stores it. With ``api.enqueue_unregistered: false`` it answers 404.
"""

import ast
import base64
import importlib.machinery
import json
import os
import subprocess
import sys

import bson
from bson import ObjectId

import core4.error
from core4.error import CoreJobModuleNotFound, CoreJobNotFound
from core4.project.home import installed
from core4.project.remote import read_answer, run_remote
from core4.queue.loader import make_job
from core4.queue.queue import CoreQueue
from core4.queue.secret import portable

#: seconds a child may take to make and validate a job
CHILD_TIMEOUT = 60
#: most re-exports followed from a name to the class
MAX_ALIASES = 5


def enqueue_anywhere(queue, name, /, **kwargs):
    """Enqueue the job ``name``; where its class cannot be imported here,
    in its project's environment. Returns the new job's ``_id``."""
    try:
        job = make_job(name, **kwargs)
    except core4.error.CoreJobNotFound:
        project = str(name).split(".", 1)[0]
        if not installed(queue.config, project):
            raise
    else:
        return queue.submit(job)._id
    answer = run_remote(queue.config, project, enqueue,
                        {"name": name, "kwargs": portable(kwargs),
                         "by": None})
    return ObjectId(answer["_id"])


def enqueue(payload):
    """In a project's environment (:func:`~core4.project.remote.run_remote`):
    enqueue the job ``payload["name"]``."""
    job = CoreQueue().submit(make_job(payload["name"], **payload["kwargs"]),
                             by=payload.get("by"))
    return {"_id": str(job._id)}


# a name a user sent ----------------------------------------------------------

class ValidatedJob:
    """A job made and validated in a child process: its ``name`` (the
    class's own) and document; after :func:`enqueue_as` stored it, the
    stored document (``_id``, ``state``, ``enqueued``, ...)."""

    def __init__(self, doc):
        self.doc = doc
        self.name = doc["name"]

    def __getattr__(self, key):
        try:
            return self.__dict__["doc"][key]
        except KeyError:
            raise AttributeError(key) from None

    def serialise(self):
        """Return the job's document."""
        return dict(self.doc)


def enqueue_as(queue, name, by, kwargs, check=None):
    """Enqueue the job ``name`` a user sent, recording ``by`` (the user)
    as who enqueued it, without importing a module the name chose here
    (see the module). Returns the new job's ``_id``.

    ``check(job)``, if given, is called with the validated job before it
    is enqueued (its ``name`` is the class's own name, which differs from
    ``name`` for a re-exported class) and may raise to refuse it; the
    object then gets the enqueued job's fields. ``job`` is the job object,
    or a :class:`ValidatedJob` if it was validated in a child process.
    """
    known = registered_name(queue, name)
    project = name.split(".", 1)[0]
    if known is not None:
        try:
            job = make_job(known, **kwargs)
        except CoreJobNotFound:
            if not installed(queue.config, project):
                raise
        else:
            if check is not None:
                check(job)
            return queue.submit(job, by=by)._id
    elif not installed(queue.config, project):
        refuse_unknown(name)
    if not queue.config.api.get("enqueue_unregistered", True) \
            and known is None:
        raise CoreJobNotFound("job %s is not registered: only jobs of the "
                              "registry (coco --jobs --introspect) can be "
                              "enqueued here" % name)
    job = ValidatedJob(validate_elsewhere(queue.config, name, kwargs))
    if check is not None:
        check(job)
    job.doc = queue.submit_document(job.doc, by)
    return job.doc["_id"]


def registered_name(queue, name):
    """Return the registered job class ``name`` is (itself, or the class a
    module re-exports under it, read from its source), or None."""
    seen = set()
    while name and name not in seen and len(seen) <= MAX_ALIASES:
        seen.add(name)
        entry = queue.sys.job.find_one({"_id": name}, {"valid": 1})
        if entry is not None and entry.get("valid") in (True, 1):
            return name
        status, target = locate(name)
        name = target if status == "alias" else None
    return None


def refuse_unknown(name):
    """Raise :class:`CoreJobNotFound` (404) if the source shows that
    ``name`` cannot be a job: no such module, a built-in module, or a
    module that binds no such name."""
    status, detail = locate(name)
    if status in ("missing", "absent", "builtin"):
        raise (CoreJobModuleNotFound if status == "missing"
               else CoreJobNotFound)(detail)


def validate_elsewhere(config, name, kwargs):
    """Make and validate job ``name`` in a child process (of its project's
    environment if it is an installed project); return its document."""
    payload = {"name": name, "kwargs": portable(kwargs)}
    project = name.split(".", 1)[0]
    if installed(config, project):
        answer = run_remote(config, project, validate, payload)
    else:
        answer = run_child(validate, payload)
    return bson.decode(base64.b64decode(answer["doc"]))


def validate(payload):
    """In a child process: make and validate job ``payload["name"]`` with
    ``payload["kwargs"]``; answer its document (BSON, base64)."""
    name = payload["name"]
    refuse_unknown(name)
    job = make_job(name, **payload["kwargs"])
    if job.dependency or job.chain:
        from core4.queue.dependency import check_references
        check_references(CoreQueue(), job)
    return {"doc": base64.b64encode(bson.encode(job.serialise())).decode()}


def run_child(function, payload, timeout=CHILD_TIMEOUT):
    """Call ``function`` (module-level) with ``payload`` in a child process
    of this environment, with this process's ``sys.path`` and working
    directory; return its answer or raise the core4 error it reported."""
    op = "%s:%s" % (function.__module__, function.__qualname__)
    code = ("import sys; sys.path[:] = %r + [p for p in sys.path if p not in "
            "%r]; sys.argv[1:] = [%r]; from core4.project.remote import main;"
            " sys.exit(main())" % (sys.path, sys.path, op))
    try:
        proc = subprocess.run(
            [sys.executable, "-P", "-c", code], input=json.dumps(payload),
            capture_output=True, text=True, timeout=timeout,
            cwd=os.getcwd())
    except subprocess.TimeoutExpired:
        raise core4.error.Core4UserError(
            "%s %s took longer than %d s in a child process" % (
                function.__name__, payload.get("name", ""), timeout)) \
            from None
    return read_answer(proc, "%s failed in a child process"
                       % function.__name__)


# the source of a module, read without running it ----------------------------

def find_spec(module):
    """Return ``(spec, None)`` of ``module`` found like ``import`` finds it,
    without importing it or its packages, or ``(None, the first missing
    module)``."""
    parts = module.split(".")
    path = None
    spec = None
    for index in range(1, len(parts) + 1):
        full = ".".join(parts[:index])
        spec = _spec(full, path)
        if spec is None:
            return None, full
        if index < len(parts):
            path = spec.submodule_search_locations
            if path is None:
                return None, ".".join(parts[:index + 1])
    return spec, None


def _spec(full, path):
    for finder in sys.meta_path:
        # setuptools' distutils hack imports setuptools when asked
        if type(finder).__module__.startswith("_distutils_hack") or \
                getattr(finder, "__module__", "").startswith(
                    "_distutils_hack"):
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(full, path)
        except (ImportError, ValueError, OSError):
            spec = None
        if spec is not None:
            return spec
    return None


def locate(name):
    """Say what the source of the module of ``name`` (``module.Class``)
    binds to ``Class``, without running it: ``("missing", message)`` (no
    such module), ``("builtin", message)`` (built-in or frozen: no job),
    ``("absent", message)`` (binds no such name), ``("alias",
    "module.Class")`` (imports it from there), ``("bound", None)`` (defines
    or assigns it) or ``("unknown", None)`` (no readable source)."""
    module, _, attr = name.rpartition(".")
    if not module or not all(part.isidentifier() for part in name.split(".")):
        return "missing", "%r is not a qualified job name like " \
                          "'package.module.Class'" % (name,)
    spec, missing = find_spec(module)
    if spec is None:
        return "missing", "job %s: module %s not found" % (name, missing)
    if spec.origin in ("built-in", "frozen") or isinstance(
            spec.loader, type) and spec.loader in (
                importlib.machinery.BuiltinImporter,
                importlib.machinery.FrozenImporter):
        return "builtin", "job %s: module %s is built into Python, not a " \
                          "job module" % (name, module)
    origin = spec.origin
    if spec.submodule_search_locations is not None and origin is None:
        tree = ast.Module(body=[], type_ignores=[])  # a namespace package
    else:
        if not (isinstance(origin, str) and origin.endswith(".py")):
            return "unknown", None
        try:
            with open(origin, "rb") as handle:
                tree = ast.parse(handle.read(), origin)
        except (OSError, SyntaxError, ValueError):
            return "unknown", None
    found = _binding(tree.body, attr)
    if found is None:
        return "absent", "job %s: module %s has no class %s" % (
            name, module, attr)
    if found[0] == "from":
        _, source, level, original = found
        if level:
            package = module if spec.submodule_search_locations is not None \
                else module.rpartition(".")[0]
            parts = package.split(".") if package else []
            if level - 1 >= len(parts):
                return "unknown", None
            source = ".".join(parts[:len(parts) - (level - 1)]
                              + ([source] if source else []))
        if not source:
            return "unknown", None
        return "alias", "%s.%s" % (source, original)
    return found[0], None


def _binding(body, attr):
    """The last top-level binding of ``attr`` in statements ``body``:
    ``("bound",)``, ``("from", module, level, name)``, ``("unknown",)`` or
    None."""
    found = None
    for node in body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            found = ("bound",)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == attr:
                found = ("bound",)
            elif node.name == "__getattr__":
                found = found or ("unknown",)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    found = found or ("unknown",)
                elif (alias.asname or alias.name) == attr:
                    found = ("from", node.module, node.level, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == attr:
                    found = ("bound",)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) \
                else [node.target]
            for target in targets:
                if any(isinstance(each, ast.Name) and each.id == attr
                       for each in ast.walk(target)):
                    found = ("bound",)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For,
                               ast.While)) or type(node).__name__ == "TryStar":
            for block in ("body", "orelse", "finalbody"):
                inner = _binding(getattr(node, block, None) or [], attr)
                if inner is not None:
                    found = inner
            for handler in getattr(node, "handlers", None) or []:
                inner = _binding(handler.body, attr)
                if inner is not None:
                    found = inner
    return found
