"""ConfigMap: the read-only result of loading the configuration."""

from collections.abc import Mapping

from core4.config.folders import get_folder
from core4.error import Core4ConfigurationError

_READ_ONLY = "configuration is read-only"


def freeze(value):
    """Return ``value`` made immutable: dicts become :class:`ConfigMap`,
    lists and tuples become tuples, sets become frozensets."""
    if isinstance(value, ConfigMap):
        return value
    if isinstance(value, Mapping):
        return ConfigMap(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(item) for item in value)
    return value


def thaw(value):
    """Return a plain, mutable deep copy of a frozen ``value``."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(item) for item in value]
    if isinstance(value, frozenset):
        return {thaw(item) for item in value}
    return value


class ConfigMap(Mapping):
    """A read-only mapping with attribute access.

    ``cfg.job.attempts`` equals ``cfg["job"]["attempts"]``; nested dicts are
    ConfigMaps, lists are tuples. Setting or deleting an item or attribute
    raises :class:`Core4ConfigurationError`. Keys that collide with mapping
    methods (``get``, ``items``, ``keys``, ``values``, ``to_dict``,
    ``get_folder``) are reachable with ``cfg["key"]`` only.
    """

    __slots__ = ("_data",)

    def __init__(self, data=None):
        frozen = {key: freeze(value) for key, value in (data or {}).items()}
        object.__setattr__(self, "_data", frozen)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __contains__(self, key):
        return key in self._data

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return object.__getattribute__(self, "_data")[name]
        except KeyError:
            raise AttributeError(
                "configuration has no key %r" % name) from None

    def __setattr__(self, name, value):
        raise Core4ConfigurationError(_READ_ONLY)

    def __delattr__(self, name):
        raise Core4ConfigurationError(_READ_ONLY)

    def __setitem__(self, key, value):
        raise Core4ConfigurationError(_READ_ONLY)

    def __delitem__(self, key):
        raise Core4ConfigurationError(_READ_ONLY)

    def __dir__(self):
        names = set(super().__dir__())
        names.update(key for key in self._data if isinstance(key, str))
        return sorted(names)

    def __repr__(self):
        return "ConfigMap(%r)" % (self._data,)

    def __reduce__(self):
        return (ConfigMap, (self.to_dict(),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def to_dict(self):
        """Return a deep copy as plain dicts and lists."""
        return thaw(self)

    def get_folder(self, name):
        """Return the absolute path of ``folder.<name>`` (``root``,
        ``transfer``, ``process``, ``archive``, ``temp`` or ``home``), see
        :func:`core4.config.folders.get_folder`."""
        return get_folder(self, name)


def class_config(cfg, qual_name):
    """Return the subtree of ``cfg`` at the dotted ``qual_name``, or None.

    ``class_config(cfg, "mypro.myjob.MyJob")`` is ``cfg.mypro.myjob.MyJob``;
    None if a level is missing or not a mapping.
    """
    node = cfg
    for part in qual_name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None
