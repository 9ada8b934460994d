"""Validation of one configuration layer against the schema (core4.yaml).

Rules, checked per layer (a file or one environment variable) so an error
names its source:

* a top-level key that is a section of the schema must keep the schema's
  shape: unknown keys are errors, and every value must have the type of the
  schema default (int and float are interchangeable, bool is not a number,
  a schema default of None accepts anything, a value of None is always
  accepted, a dict must stay a dict);
* the keys of the schema's ``DEFAULT`` section are allowed in every dict
  of a section (DEFAULT values are pushed there anyway);
* any other top-level key is the namespace of a project or of per-class
  configuration: its value must be a mapping (or None) and anything goes
  inside; top-level keys must be strings not starting with ``_``.
"""

import datetime
import numbers

from core4.config.connect import Connect
from core4.error import Core4ConfigurationError

#: name of the section whose values apply to every dict
DEFAULT = "DEFAULT"

_NAMES = {dict: "dict", list: "list", Connect: "!connect",
          datetime.datetime: "timestamp", datetime.date: "date"}


def type_name(value):
    """Return the name of the type the schema default ``value`` asks for."""
    for cls, name in _NAMES.items():
        if type(value) is cls:
            return name
    return type(value).__name__


def _short(value, limit=80):
    text = repr(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def type_matches(expected, value):
    """True if ``value`` may replace the schema default ``expected``."""
    if expected is None or value is None:
        return True
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool)
    if isinstance(expected, numbers.Real):
        return isinstance(value, numbers.Real)
    if isinstance(expected, dict):
        return isinstance(value, dict)
    if isinstance(expected, (list, tuple)):
        return isinstance(value, (list, tuple))
    if type(expected) is datetime.date:
        return isinstance(value, datetime.date)
    return isinstance(value, type(expected))


def _mismatch(source, path, expected, value):
    return Core4ConfigurationError("%s: %s must be %s, got %s %s" % (
        source, path, type_name(expected), type(value).__name__,
        _short(value)))


def _check_section(source, path, schema, data, defaults):
    """Check dict ``data`` against schema dict ``schema`` below ``path``."""
    for key, value in data.items():
        dotted = "%s.%s" % (path, key)
        if key in schema:
            expected = schema[key]
        elif key in defaults:
            expected = defaults[key]
        else:
            raise Core4ConfigurationError(
                "%s: unknown key %s" % (source, dotted))
        if not type_matches(expected, value):
            raise _mismatch(source, dotted, expected, value)
        if isinstance(expected, dict) and isinstance(value, dict):
            _check_section(source, dotted, expected, value, defaults)


def validate_layer(schema, data, source):
    """Raise :class:`Core4ConfigurationError` if layer ``data`` breaks the
    ``schema`` (the package defaults); ``source`` names the layer."""
    defaults = schema.get(DEFAULT) or {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise Core4ConfigurationError(
                "%s: top-level key %r must be a string" % (source, key))
        if key.startswith("_"):
            raise Core4ConfigurationError(
                "%s: top-level key %s must not start with '_'"
                % (source, key))
        if key in schema:
            expected = schema[key]
            if not type_matches(expected, value):
                raise _mismatch(source, key, expected, value)
            if isinstance(expected, dict) and isinstance(value, dict):
                _check_section(source, key, expected, value,
                               {} if key == DEFAULT else defaults)
        elif value is not None and not isinstance(value, dict):
            raise Core4ConfigurationError(
                "%s: unknown top-level key %s must be a mapping (project or "
                "class namespace), got %s %s" % (
                    source, key, type(value).__name__, _short(value)))
