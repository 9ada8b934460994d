"""Steps that turn merged layers into the final configuration.

:func:`merge` folds one layer into the result, :func:`expand_folders` makes
the ``folder`` section absolute, :func:`propagate_defaults` pushes
``DEFAULT`` values into every dict and :func:`resolve_connects` fills the
url and database of each ``!connect``.
"""

import copy
import os

from core4.config.connect import Connect
from core4.config.schema import DEFAULT
from core4.error import Core4ConfigurationError

#: folder keys joined with ``folder.root`` when relative
RELATIVE_FOLDERS = ("transfer", "process", "archive", "temp")


def merge(base, layer):
    """Merge dict ``layer`` into dict ``base`` in place (layer wins).

    Dicts merge recursively; any other value replaces. None over a dict
    keeps the dict (an empty section, e.g. ``job:`` with all entries
    commented out, changes nothing).
    """
    for key, value in layer.items():
        old = base.get(key)
        if isinstance(old, dict):
            if value is None:
                continue
            if isinstance(value, dict):
                merge(old, value)
                continue
        if isinstance(value, dict):
            value = merge({}, value)
        base[key] = value
    return base


def expand_folders(config):
    """Expand ``~`` in ``folder.home``/``folder.root`` and join the relative
    ``transfer``, ``process``, ``archive`` and ``temp`` with ``root``."""
    folder = config.get("folder")
    if not isinstance(folder, dict):
        return
    for key in ("home", "root"):
        if isinstance(folder.get(key), str):
            folder[key] = os.path.expanduser(folder[key])
    root = folder.get("root")
    for key in RELATIVE_FOLDERS:
        value = folder.get(key)
        if isinstance(value, str):
            value = os.path.expanduser(value)
            if isinstance(root, str) and not os.path.isabs(value):
                value = os.path.join(root, value)
            folder[key] = value


def _push(dct, inherited):
    """Apply the inherited and ``dct``'s own DEFAULT values to ``dct`` and
    its sub-dicts (the own DEFAULT dict itself only gets ``inherited``)."""
    own = dct.get(DEFAULT)
    effective = dict(inherited)
    if isinstance(own, dict):
        effective.update(own)
    children = [value for value in dct.values() if isinstance(value, dict)]
    for key, value in effective.items():
        if key not in dct:
            dct[key] = copy.deepcopy(value)
    for child in children:
        _push(child, inherited if child is own else effective)


def propagate_defaults(config):
    """Push DEFAULT values into every dict below the top level, in place.

    The top-level ``DEFAULT`` applies everywhere; a ``DEFAULT`` inside a
    dict (e.g. a project's ``mypro.DEFAULT``) applies to that dict and its
    subtree on top of the inherited values. A key present in a dict wins.
    """
    top = config.get(DEFAULT)
    top = dict(top) if isinstance(top, dict) else {}
    for key, value in config.items():
        if isinstance(value, dict):
            _push(value, {} if key == DEFAULT else top)


def _resolve(value, scope, path):
    if isinstance(value, Connect):
        try:
            return value.resolve(scope.get("mongo_url"),
                                 scope.get("mongo_database"), path)
        except Core4ConfigurationError as exc:
            raise Core4ConfigurationError("%s: %s" % (path, exc)) from None
    if isinstance(value, dict):
        for key in value:
            value[key] = _resolve(value[key], value, "%s.%s" % (path, key))
        return value
    if isinstance(value, list):
        return [_resolve(item, scope, "%s[%d]" % (path, num))
                for num, item in enumerate(value)]
    return value


def resolve_connects(config):
    """Resolve every ``!connect`` with the ``mongo_url``/``mongo_database``
    of the dict containing it, in place; each remembers its dotted key
    (``sys.queue``, ``mypro.sales``) as its ``path``."""
    for key in config:
        config[key] = _resolve(config[key], config, key)
