"""Find the job classes of a package: what ``coco --jobs`` lists and
``sys_job`` records (author, schedule, doc, valid and why not)."""

import importlib
import inspect
import pkgutil

from core4.queue.job import CoreJob


def iter_modules(package):
    """Import ``package`` and all its submodules; yield ``(name, module or
    exception)``."""
    try:
        root = importlib.import_module(package)
    except Exception as exc:
        yield package, exc
        return
    yield package, root
    path = getattr(root, "__path__", None)
    if not path:
        return
    for info in pkgutil.walk_packages(path, prefix=package + ".",
                                      onerror=lambda name: None):
        try:
            yield info.name, importlib.import_module(info.name)
        except Exception as exc:
            yield info.name, exc


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


def collect(package):
    """Return the registry entries of every job class defined in
    ``package`` (abstract jobs left out), plus entries for modules that
    fail to import (``valid`` False)."""
    found = {}
    for name, module in iter_modules(package):
        if isinstance(module, Exception):
            found[name] = {"_id": name, "name": name,
                           "project": package, "author": None, "doc": "",
                           "schedule": None, "tag": None, "valid": False,
                           "exception": "cannot import %s: %s: %s" % (
                               name, type(module).__name__, module)}
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, CoreJob) and cls.__module__ == module.__name__
                    and not cls.is_abstract()):
                found[cls.qual_name()] = describe(cls)
    return [found[key] for key in sorted(found)]
