"""The configuration cascade: where the layers come from and their order.

Later layers win:

1. the package defaults ``core4/core4.yaml`` (also the schema);
2. the project's ``<project>/<project>.yaml``, wrapped under ``<project>``;
3. one local file: ``local_file``, else ``$CORE4_CONFIG``, else
   ``~/.core4/local.yaml``, else ``/etc/core4/local.yaml``;
4. ``CORE4_OPTION_<k1>__<k2>...=<yaml scalar>`` environment variables.

Keys of the original core4 that core4 does not have are mapped or dropped
with a warning before a layer is validated (:mod:`core4.config.upstream`).
"""

import copy
import functools
import importlib.resources
import importlib.util
import os
import re

from core4.config import resolve, upstream
from core4.config.configmap import ConfigMap
from core4.config.loader import load_file, parse_scalar
from core4.config.schema import validate_layer
from core4.error import Core4ConfigurationError

#: environment variable naming the local configuration file
CONFIG_ENV = "CORE4_CONFIG"

#: prefix of environment variables setting single options
OPTION_PREFIX = "CORE4_OPTION_"

#: separator of the key levels in an option variable's name
OPTION_SEPARATOR = "__"

#: local file of the user (used if neither local_file nor CORE4_CONFIG)
USER_LOCAL = "~/.core4/local.yaml"

#: system-wide local file (used if there is no user local file)
SYSTEM_LOCAL = "/etc/core4/local.yaml"

_PROJECT_MARK = re.compile(
    r"""^\s*__project__\s*=\s*["']core4["']""", re.MULTILINE)


def package_defaults_path():
    """Return the path of the package defaults ``core4/core4.yaml``."""
    return str(importlib.resources.files("core4").joinpath("core4.yaml"))


@functools.lru_cache(maxsize=None)
def _schema():
    return load_file(package_defaults_path())


def forget_package_defaults():
    """Drop the parsed package defaults (see :func:`package_defaults`)."""
    _schema.cache_clear()


def package_defaults():
    """Return a fresh copy of the package defaults (the schema)."""
    return copy.deepcopy(_schema())


def project_file(project):
    """Return the path of ``project``'s yaml, or None.

    None if ``project`` is None or ``core4`` (already the package defaults),
    cannot be found, is not a package whose ``__init__.py`` declares
    ``__project__ = "core4"``, or has no ``<project>.yaml``. The package is
    located with :func:`importlib.util.find_spec`, never imported.
    """
    if not project or project == "core4" or "." in project:
        return None
    try:
        spec = importlib.util.find_spec(project)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    if not origin or os.path.basename(origin) != "__init__.py":
        return None
    try:
        with open(origin, "r", encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    if not _PROJECT_MARK.search(text):
        return None
    path = os.path.join(os.path.dirname(origin), project + ".yaml")
    return path if os.path.isfile(path) else None


def local_path(local_file=None, environ=None):
    """Return the local configuration file to use, or None.

    ``local_file`` and ``$CORE4_CONFIG`` must exist (else
    :class:`Core4ConfigurationError`); otherwise the first existing of
    :data:`USER_LOCAL` and :data:`SYSTEM_LOCAL` is used.
    """
    environ = os.environ if environ is None else environ
    if local_file is not None:
        if not os.path.isfile(local_file):
            raise Core4ConfigurationError(
                "local configuration file %s not found" % local_file)
        return local_file
    named = environ.get(CONFIG_ENV)
    if named:
        if not os.path.isfile(named):
            raise Core4ConfigurationError(
                "%s=%s: configuration file not found" % (CONFIG_ENV, named))
        return named
    for candidate in (os.path.expanduser(USER_LOCAL), SYSTEM_LOCAL):
        if os.path.isfile(candidate):
            return candidate
    return None


def option_layers(environ=None):
    """Yield ``(source, layer)`` for each ``CORE4_OPTION_*`` variable,
    sorted by name; ``layer`` is the nested dict the variable sets."""
    environ = os.environ if environ is None else environ
    for name in sorted(environ):
        if not name.startswith(OPTION_PREFIX):
            continue
        source = "environment variable %s" % name
        keys = name[len(OPTION_PREFIX):].split(OPTION_SEPARATOR)
        if not all(keys):
            raise Core4ConfigurationError(
                "%s: empty key (use %s<key>%s<key>...)"
                % (source, OPTION_PREFIX, OPTION_SEPARATOR))
        layer = parse_scalar(environ[name], source)
        for key in reversed(keys):
            layer = {key: layer}
        yield source, layer


def _add(config, schema, layer, source, project=None):
    layer = upstream.translate(schema, layer, source,
                               (project,) if project else ())
    validate_layer(schema, layer, source)
    # an empty namespace (``mypro:`` without entries) adds nothing
    layer = {key: value for key, value in layer.items()
             if value is not None or key in schema}
    resolve.merge(config, layer)


def load_config(project=None, local_file=None, environ=None):
    """Load the configuration by the cascade and return a :class:`ConfigMap`.

    ``project`` adds the project's yaml (see :func:`project_file`),
    ``local_file`` replaces the search for the local file and ``environ``
    (default :data:`os.environ`) supplies ``CORE4_CONFIG`` and the
    ``CORE4_OPTION_*`` variables. Each layer is validated against the
    package defaults; errors raise :class:`Core4ConfigurationError`.
    """
    environ = os.environ if environ is None else environ
    schema = _schema()
    config = package_defaults()
    path = project_file(project)
    if path is not None:
        if project in schema:
            raise Core4ConfigurationError(
                "%s: project %s clashes with core4 section %s"
                % (path, project, project))
        _add(config, schema, {project: load_file(path)}, path, project)
    path = local_path(local_file, environ)
    if path is not None:
        _add(config, schema, load_file(path), path, project)
    for source, layer in option_layers(environ):
        _add(config, schema, layer, source, project)
    resolve.expand_folders(config)
    resolve.propagate_defaults(config)
    resolve.resolve_connects(config)
    return ConfigMap(config)
