"""Import a package and all its submodules, to find what it defines (its
job classes for the job registry, its API containers)."""

import importlib
import pkgutil


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
