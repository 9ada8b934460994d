"""The job registry ``sys_job``: every job class of core4, of the projects
installed in the core4 home (introspected in each project's own
environment) and of the projects importable in the current environment
(introspected with the current Python); what ``coco --jobs`` lists, the
scheduler schedules and ``sys_job`` records: author, schedule, doc, valid
and why not."""

import ast
import importlib.util
import inspect
import json
import subprocess
import sys

from core4.logger import get_logger
from core4.mongo import now
from core4.project.home import environment_projects, installed_projects
from core4.project.introspect import iter_modules
from core4.project.remote import run_remote
from core4.queue.job import CoreJob

#: where core4's own jobs live (its other modules define none)
CORE4_JOBS = "core4.queue.helper"


def describe(cls):
    """Return the registry entry of one job class."""
    entry = {"_id": cls.qual_name(), "name": cls.qual_name(),
             "project": cls.qual_name().split(".", 1)[0],
             "author": cls.__dict__.get("author"),
             "doc": inspect.getdoc(cls) or "",
             "schedule": cls.__dict__.get("schedule"),
             "tag": None, "valid": True, "exception": None}
    try:
        job = cls()
        job.validate()
        entry.update(schedule=job.schedule, tag=job.tag)
    except Exception as exc:
        entry.update(valid=False, exception="%s: %s" % (
            type(exc).__name__, exc))
    return entry


def may_define_jobs(name):
    """True unless module ``name``'s source shows it defines no job: a
    module that fails to import is listed only if it may hold jobs (a class
    whose base is named ``...Job``, or source that does not parse)."""
    try:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
        with open(origin, "rb") as handle:
            tree = ast.parse(handle.read(), origin)
    except SyntaxError:
        return True
    except Exception:  # noqa: BLE001 - no readable source: assume jobs
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                base_name = getattr(base, "id", None) or getattr(
                    base, "attr", "")
                if base_name.endswith("Job"):
                    return True
    return False


def collect(package):
    """Return the registry entries of every job class defined in
    ``package`` (abstract jobs left out), plus entries for modules that
    fail to import and may define jobs (``valid`` False; see
    :func:`may_define_jobs`)."""
    found = {}
    project = package.split(".", 1)[0]
    for name, module in iter_modules(package):
        if isinstance(module, Exception):
            if not may_define_jobs(name):
                continue
            found[name] = {"_id": name, "name": name,
                           "project": project, "author": None, "doc": "",
                           "schedule": None, "tag": None, "valid": False,
                           "exception": "cannot import %s: %s: %s" % (
                               name, type(module).__name__, module)}
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, CoreJob) and cls.__module__ == module.__name__
                    and not cls.is_abstract()):
                found[cls.qual_name()] = describe(cls)
    return [found[key] for key in sorted(found)]


def introspect(payload):
    """In a project's environment (:func:`~core4.project.remote.run_remote`):
    the registry entries of ``payload["package"]``."""
    return {"jobs": collect(payload["package"])}


def introspect_packages(payload):
    """With the current Python (see :func:`collect_environment`): the
    registry entries of each package in ``payload["packages"]``."""
    return {"jobs": [entry for package in payload["packages"]
                     for entry in collect(package)]}


def _invalid(project, exception):
    return {"_id": project, "name": project, "project": project,
            "valid": False, "exception": exception}


def collect_environment(packages, timeout=120):
    """Return the registry entries of the projects ``packages`` importable
    in the current environment, introspected by a fresh process of the
    current Python (so that changed code is seen, and importing a
    project's modules leaves the caller alone)."""
    if not packages:
        return []
    op = "%s:%s" % (__name__, introspect_packages.__name__)
    try:
        proc = subprocess.run(
            [sys.executable, "-P", "-m", "core4.project.remote", op],
            input=json.dumps({"packages": list(packages)}),
            capture_output=True, text=True, timeout=timeout)
        lines = proc.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines else {}
    except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
        answer = {"message": "introspection failed: %s" % exc}
    if "jobs" not in answer:
        last = answer.get("message") or (
            proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [_invalid(package, last) for package in packages]
    return answer["jobs"]


def collect_all(config):
    """Return the registry entries of core4's jobs (introspected here), of
    the projects importable in this environment (see
    :func:`collect_environment`) and of every project installed in the
    core4 home (introspected in its ``.venv``). A project found in both
    places is taken from the home."""
    entries = collect(CORE4_JOBS)
    here = []
    for project in environment_projects(config):
        if project["home"]:
            get_logger(__name__).info(
                "project %s is installed in the core4 home and importable "
                "here (%s): the home's is used", project["name"],
                project["path"])
        else:
            here.append(project["name"])
    entries.extend(collect_environment(here))
    for project in installed_projects(config):
        if project["python"] is None:
            entries.append(_invalid(project["name"], (
                "no virtual environment in %s" % project["root"])))
            continue
        try:
            answer = run_remote(config, project["name"], introspect,
                                {"package": project["name"]})
        except Exception as exc:
            entries.append(_invalid(project["name"], str(exc)))
            continue
        entries.extend(answer["jobs"])
    return entries


def register(system, entries):
    """Upsert ``entries`` into ``sys_job``; entries no longer found are
    marked ``valid: False`` with ``exception: "not found"``. ``updated_at``
    and ``created_at`` are BSON datetimes (UTC, :func:`core4.mongo.now`)."""
    at = now()
    seen = []
    for entry in entries:
        fields = {key: value for key, value in entry.items() if key != "_id"}
        fields["updated_at"] = at
        system.job.update_one({"_id": entry["_id"]},
                              {"$set": fields,
                               "$setOnInsert": {"created_at": at}},
                              upsert=True)
        seen.append(entry["_id"])
    system.job.update_many({"_id": {"$nin": seen}},
                           {"$set": {"valid": False,
                                     "exception": "not found",
                                     "updated_at": at}})
