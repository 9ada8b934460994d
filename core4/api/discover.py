"""Find API containers: core4's own, and those of a project's package;
list their routes (what the original core4's ``coco --container`` showed,
see :func:`route_rows`)."""

import inspect

from core4.api.container import CoreApiContainer
from core4.project.introspect import iter_modules


def find_containers(package, filters=None, on_error=None):
    """Return the container classes defined in ``package`` (and its
    submodules), sorted by qualified name; with ``filters`` only those
    whose qualified name starts with one of them.

    A module that fails to import is left out; ``on_error(name,
    exception)`` is called for it (it may raise)."""
    found = {}
    for name, module in iter_modules(package):
        if isinstance(module, Exception):
            if on_error is not None:
                on_error(name, module)
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, CoreApiContainer)
                    and cls is not CoreApiContainer
                    and cls.__module__ == module.__name__ and cls.rules):
                found[cls.qual_name()] = cls
    result = [found[key] for key in sorted(found)]
    if filters:
        result = [cls for cls in result
                  if any(cls.qual_name().startswith(f) for f in filters)]
    return result


def core4_containers(filters=None):
    """Return core4's own containers (API and dashboard)."""
    return find_containers("core4.api", filters)


def describe_routes(containers, config):
    """Return ``[{"container", "enabled", "route", "handler"}]`` of the
    routes of ``containers`` (their root applied)."""
    rows = []
    for container in containers:
        enabled, _ = container.settings(config)
        for pattern, handler, _ in container.routes(config):
            rows.append({"container": container.qual_name(),
                         "enabled": enabled, "route": pattern,
                         "handler": "%s.%s" % (handler.__module__,
                                               handler.__qualname__)})
    return rows


def project_routes(payload):
    """In a project's environment (:func:`~core4.project.remote.run_remote`):
    the routes of the containers of ``payload["package"]``."""
    from core4.config import get_config
    return {"routes": describe_routes(find_containers(payload["package"]),
                                      get_config(payload["package"]))}


def route_rows(config):
    """Return the routes ``coco --application`` serves: of core4's
    containers and of those of every project in the core4 home (asked in
    the project's own ``.venv``): ``[{"container", "enabled", "route",
    "handler"}]``, with an ``error`` for a project that cannot answer."""
    from core4.project.home import installed_projects
    from core4.project.remote import run_remote
    rows = describe_routes(core4_containers(), config)
    for project in installed_projects(config):
        try:
            rows.extend(run_remote(config, project["name"], project_routes,
                                   {"package": project["name"]})["routes"])
        except Exception as exc:  # noqa: BLE001 - shown in its row
            rows.append({"container": project["name"], "enabled": False,
                         "route": "", "handler": "",
                         "error": str(exc).split("\n")[0]})
    return rows
