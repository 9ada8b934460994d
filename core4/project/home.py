"""The core4 home: installed projects and their virtual environments.

``<folder.home>/<project>/`` holds one project: installed there by
``croll.py`` (``.src/`` checkout, ``.venv`` symlink to ``.venvs/<commit>``,
``croll.json``), or a link to a project created with ``coco --init``.
``<folder.home>/mongo`` is the embedded database and
``<folder.home>/core4`` core4's own environment made by ``croll.py core4``
(the tutorial's production layout): neither is a project.

A project may also be importable by the Python that runs core4 itself
(``pip install -e .``, installed, or on ``PYTHONPATH``): see
:func:`environment_projects`. Its jobs run with that Python.
"""

import importlib.metadata
import importlib.util
import json
import os
import pkgutil
import re

#: names in the home that are not projects
RESERVED = ("mongo", "data", "core4")

_PROJECT_RE = re.compile(r"""^__project__\s*=\s*['"]core4['"]""", re.M)
_VERSION_RE = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.M)


def is_core4_project(package_dir):
    """True if ``package_dir/__init__.py`` declares ``__project__ =
    "core4"``."""
    try:
        with open(os.path.join(package_dir, "__init__.py")) as handle:
            return bool(_PROJECT_RE.search(handle.read()))
    except OSError:
        return False


def package_version(package_dir):
    """Return ``__version__`` of a package (read, not imported), or None."""
    try:
        with open(os.path.join(package_dir, "__init__.py")) as handle:
            found = _VERSION_RE.search(handle.read())
    except OSError:
        return None
    return found.group(1) if found else None


def project_root(config, name):
    """Return ``<home>/<name>`` (it may not exist)."""
    return os.path.join(config.folder.home, name)


def venv_python(root):
    """Return the python of the project installed at ``root``."""
    return os.path.join(root, ".venv", "bin", "python")


def source_dir(root, name):
    """Return the directory holding the package ``name`` of an installed
    project: ``.src`` for croll.py installs, else the project root."""
    for base in (os.path.join(root, ".src"), root):
        if is_core4_project(os.path.join(base, name)):
            return base
    return None


def installed(config, name):
    """True if ``name`` is a project in the core4 home (never without a
    home: ``folder.home: ~``, as the original core4 had by default)."""
    return (bool(config.folder.home) and name not in RESERVED
            and name.isidentifier()
            and os.path.isdir(project_root(config, name)))


def installed_projects(config):
    """Return the projects of the core4 home, sorted by name: dicts with
    ``name``, ``root``, ``python`` (None if the venv is missing),
    ``version`` and ``commit`` (croll.py installs)."""
    home = config.folder.home
    found = []
    if not home:
        return found
    try:
        names = sorted(os.listdir(home))
    except OSError:
        return found
    for name in names:
        if not installed(config, name):
            continue
        root = project_root(config, name)
        python = venv_python(root)
        src = source_dir(root, name)
        commit = None
        try:
            with open(os.path.join(root, "croll.json")) as handle:
                commit = json.load(handle).get("commit")
        except (OSError, ValueError):
            pass
        found.append({
            "name": name, "root": root,
            "python": python if os.path.exists(python) else None,
            "version": package_version(os.path.join(src, name)) if src
            else None,
            "commit": commit})
    return found


def _top_level_names():
    """Yield ``(name, directory or None)`` of the top-level packages this
    Python can import: those on ``sys.path`` and those of installed
    distributions (editable installs are found by an import hook, not on
    ``sys.path``), without importing them."""
    for info in pkgutil.iter_modules():
        if info.ispkg and hasattr(info.module_finder, "path"):
            yield info.name, os.path.join(info.module_finder.path, info.name)
    for dist in importlib.metadata.distributions():
        try:
            names = (dist.read_text("top_level.txt") or "").split()
        except Exception:  # noqa: BLE001 - a broken distribution: skip it
            continue
        for name in names:
            yield name, None


def _package_dir(name):
    """The directory of top-level package ``name`` (not imported)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = spec and spec.submodule_search_locations
    return list(locations)[0] if locations else None


def environment_projects(config):
    """Return the core4 projects importable by this Python (their
    ``__init__.py`` declares ``__project__ = "core4"``), core4 itself and
    the names reserved in the home left out, sorted by name: dicts with
    ``name``, ``path`` (the package directory), ``version`` and ``home``
    (True if the core4 home has a project of that name too: the home's is
    the one core4 uses)."""
    found, seen = {}, set()
    for name, path in _top_level_names():
        if (name in seen or name in RESERVED or not name.isidentifier()
                or name.startswith("_")):
            continue
        seen.add(name)
        path = path or _package_dir(name)
        if path and is_core4_project(path):
            found[name] = {"name": name, "path": os.path.abspath(path),
                           "version": package_version(path),
                           "home": installed(config, name)}
    return [found[name] for name in sorted(found)]
