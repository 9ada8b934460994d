"""Find API containers: core4's own, and those of a project's package."""

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
