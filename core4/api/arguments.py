"""Typed request arguments: convert what a client sent, or say clearly
what is wrong with it."""

import datetime
import json
import re

import dateutil.parser
from bson import ObjectId
from bson.errors import InvalidId

from core4.error import Core4UserError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ArgumentError(Core4UserError):
    """A request argument is missing or has a wrong type or value;
    ``field`` names it."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


def _to_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ValueError("not a boolean (true or false)")


def _to_int(value):
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("not an integer")
    return int(value)


def _to_float(value):
    if isinstance(value, bool):
        raise ValueError("not a number")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return result


def _to_str(value):
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _finite(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number %s is too large" % text[:40])
    return value


def _no_constant(name):
    raise ValueError("%s is not a JSON number" % name)


#: a JSON escape of a UTF-16 surrogate (half of a pair, or a lone one)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_surrogates(value):
    """Raise ValueError if a string in ``value`` (keys included) holds a
    lone UTF-16 surrogate: no UTF-8 text can carry it (the database and
    the logs would fail on it later)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise ValueError("a string holds a lone UTF-16 surrogate "
                             "(\\ud800-\\udfff), which is no text")


def loads(text):
    """Parse JSON ``text`` as a client sends it: numbers must be finite
    (no NaN, Infinity or 1e400), which every answer can show again, and
    strings must be text (no lone UTF-16 surrogate like ``"\\ud800"``)."""
    if isinstance(text, str) and _SURROGATE.search(text):
        raise ValueError("the text holds a lone UTF-16 surrogate")
    value = json.loads(text, parse_float=_finite,
                       parse_constant=_no_constant)
    if _SURROGATE_ESCAPE.search(text):
        _refuse_surrogates(value)
    return value


def parse_body(body):
    """Parse a request ``body`` (bytes) as JSON: it must be UTF-8 text
    (see :func:`loads`); raise ValueError naming the problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8 text (byte %d)" % exc.start) from None
    return loads(text)


def _json(kind):
    def convert(value):
        if isinstance(value, str):
            value = loads(value)
        if not isinstance(value, kind):
            raise ValueError("not a JSON %s" % (
                "object" if kind is dict else "array"))
        return value
    return convert


def _to_datetime(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if not isinstance(value, str):
        raise ValueError("not a date and time")
    result = dateutil.parser.isoparse(value)
    if result.tzinfo is None:
        result = result.replace(tzinfo=datetime.timezone.utc)
    return result


def _to_objectid(value):
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError):
        raise ValueError("not an id (24 hex digits)") from None


CONVERTERS = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str,
              dict: _json(dict), list: _json(list),
              datetime.datetime: _to_datetime, ObjectId: _to_objectid}
TYPE_NAMES = {int: "integer", float: "number", bool: "boolean",
              str: "string", dict: "JSON object", list: "JSON array",
              datetime.datetime: "ISO 8601 date/time", ObjectId: "id"}


def convert(name, value, as_type):
    """Return ``value`` as ``as_type`` or raise :class:`ArgumentError`."""
    if as_type is None:
        return value
    try:
        return CONVERTERS[as_type](value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ArgumentError("argument %s=%s: %s" % (
            name, _short(value), exc.args[0] if exc.args else
            "expected %s" % TYPE_NAMES[as_type]), field=name) from None


def _short(value, limit=60):
    text = json.dumps(value, default=str) if not isinstance(
        value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
