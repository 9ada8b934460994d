"""Reading configuration YAML: files and ``CORE4_OPTION_*`` values.

:class:`ConfigLoader` is a :class:`yaml.SafeLoader` that also knows the
``!connect`` tag and accepts ``!!timestamp`` values YAML itself rejects
(e.g. ``2020-01-01 12:00``, parsed with :mod:`dateutil`).
"""

import re

import dateutil.parser
import yaml

from core4.config.connect import Connect
from core4.error import Core4ConfigurationError

#: tag of ``!connect`` values
CONNECT_TAG = "!connect"

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML loader with ``!connect`` and a lenient ``!!timestamp``."""


def _construct_connect(loader, node):
    """Build a :class:`Connect` from a ``!connect`` scalar."""
    return Connect.parse(loader.construct_scalar(node))


def _construct_timestamp(loader, node):
    """Build a timestamp: YAML's own format first, then :mod:`dateutil`."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except Exception:
        value = loader.construct_scalar(node)
        try:
            return dateutil.parser.parse(value)
        except (ValueError, OverflowError):
            raise Core4ConfigurationError(
                "invalid timestamp %r" % value) from None


ConfigLoader.add_constructor(CONNECT_TAG, _construct_connect)
ConfigLoader.add_constructor(_TIMESTAMP_TAG, _construct_timestamp)


def one_line(exc):
    """Return the message of ``exc`` collapsed to a single line."""
    return re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__


def parse_yaml(text, source):
    """Parse YAML ``text`` with :class:`ConfigLoader`.

    Any error becomes a :class:`Core4ConfigurationError` naming ``source``.
    """
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except Core4ConfigurationError as exc:
        raise Core4ConfigurationError("%s: %s" % (source, exc)) from None
    except Exception as exc:
        raise Core4ConfigurationError(
            "%s: invalid YAML: %s" % (source, one_line(exc))) from None


def load_file(path):
    """Return the mapping in YAML file ``path`` (an empty file gives {}).

    A missing/unreadable file, invalid YAML or a top level that is not a
    mapping raises :class:`Core4ConfigurationError` naming the file.
    """
    try:
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise Core4ConfigurationError(
            "%s: cannot read configuration file: %s"
            % (path, one_line(exc))) from None
    data = parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Core4ConfigurationError(
            "%s: top level must be a mapping, got %s"
            % (path, type(data).__name__))
    return data


def parse_scalar(value, source):
    """Parse an environment value as one YAML scalar.

    Tags work (``!!int 5``, ``!!float 1.5``, ``!!bool true``, ``!!str 5``,
    ``!!timestamp 2020-01-01 12:00``, ``!connect mongodb://...``), ``~`` is
    None, plain ``5`` an int and ``abc`` a str; an empty value is None.
    An untagged value that is not a single YAML scalar (``a: b``, ``[1]``,
    ``%s``) is taken literally as a string; a tagged value that does not
    parse raises :class:`Core4ConfigurationError` naming ``source``.
    """
    if value.strip() == "":
        return None
    tagged = value.lstrip().startswith("!")
    loader = ConfigLoader(value)
    try:
        node = loader.get_single_node()
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_document(node)
        if tagged:
            raise Core4ConfigurationError("must be a single YAML scalar")
        return value
    except Core4ConfigurationError as exc:
        raise Core4ConfigurationError("%s: %s" % (source, exc)) from None
    except Exception as exc:
        if tagged:
            raise Core4ConfigurationError("%s: invalid value %r: %s" % (
                source, value, one_line(exc))) from None
        return value
    finally:
        loader.dispose()
