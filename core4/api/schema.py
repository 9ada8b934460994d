"""The request contract of the API, declared once: query parameters
(:class:`Param`) and JSON bodies (:class:`Body`) described by OpenAPI 3.0
schemas, which both the OpenAPI document (:mod:`core4.api.v1.spec`) and the
handlers' validation (:func:`check`) read, so the two cannot drift.

A schema value may be a function of the configuration (e.g. ``maximum``
of ``per_page`` is ``api.max_per_page``): :func:`resolve` calls it.

:func:`check` knows the keywords the API uses: ``type`` (with
``nullable``), ``enum``, ``minimum``, ``maximum``, ``exclusiveMinimum``,
``minLength``, ``maxLength``, ``pattern``, ``items``, ``maxItems``,
``properties``, ``required`` and ``additionalProperties``. A value that
fails it is refused with a one-line message naming the field.
"""

import datetime
import functools
import re

from core4.api.arguments import ArgumentError, convert
from core4.api.arguments import _short as short

#: Python types of the schema types, for :func:`convert` of query values
_QUERY_TYPES = {"integer": int, "number": float, "boolean": bool,
                "string": str, "object": dict, "array": list}
_JSON_TYPES = {"integer": int, "number": (int, float), "boolean": bool,
               "string": str, "object": dict, "array": list}


_TYPE_NAMES = {"integer": "an integer", "number": "a number",
               "boolean": "a boolean (true or false)", "string": "a string",
               "object": "a JSON object", "array": "a JSON array"}


def resolve(schema, config):
    """Return ``schema`` with every function value replaced by its value
    for ``config``."""
    if callable(schema):
        return schema(config)
    if isinstance(schema, dict):
        return {key: resolve(value, config) for key, value in schema.items()}
    if isinstance(schema, list):
        return [resolve(value, config) for value in schema]
    return schema


class Refused(ArgumentError):
    """A value breaks the ``keyword`` of its schema."""

    def __init__(self, message, field, keyword, value):
        super().__init__(message, field=field)
        self.keyword = keyword
        self.value = value


@functools.lru_cache(maxsize=None)
def _compiled(pattern):
    """``pattern`` (ECMA 262, as OpenAPI means it) for Python's ``re``:
    ``$`` is the end of the text (Python's also matches before a final
    newline)."""
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def _type_ok(value, kind):
    if isinstance(value, bool) and kind not in ("boolean",):
        return False
    return isinstance(value, _JSON_TYPES[kind])


def check(name, value, schema):
    """Return ``value`` if it satisfies ``schema`` (resolved), else raise
    :class:`Refused` naming ``name``, the problem and the keyword."""
    if value is None:
        if schema.get("nullable") or not schema:
            return value
        raise Refused("%s must not be null" % name, name, "nullable", value)
    kind = schema.get("type")
    if kind and not _type_ok(value, kind):
        raise Refused("argument %s=%s: not %s" % (
            name, short(value), _TYPE_NAMES[kind]), name, "type", value)
    if "enum" in schema and value not in schema["enum"]:
        raise Refused("%s must be one of %s" % (name, ", ".join(
            str(v) for v in schema["enum"])), name, "enum", value)
    _check_number(name, value, schema)
    if isinstance(value, str):
        _check_string(name, value, schema)
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise Refused("%s has more than %d items" % (
                name, schema["maxItems"]), name, "maxItems", value)
        for index, item in enumerate(value):
            check("%s[%d]" % (name, index), item, schema.get("items", {}))
    if isinstance(value, dict) and "properties" in schema:
        check_object(value, schema, prefix=name + ".")
    return value


def _check_number(name, value, schema):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") and value <= low):
            raise Refused("%s must be %s %s" % (
                name, "more than" if schema.get("exclusiveMinimum")
                else "at least", low), name, "minimum", value)
    if "maximum" in schema and value > schema["maximum"]:
        raise Refused("%s must be at most %s" % (name, schema["maximum"]),
                      name, "maximum", value)


def _check_string(name, value, schema):
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise Refused("%s must have at least %d characters" % (
            name, schema["minLength"]), name, "minLength", value)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise Refused("%s must have at most %d characters" % (
            name, schema["maxLength"]), name, "maxLength", value)
    if "pattern" in schema and not _compiled(schema["pattern"]).search(
            value):
        raise Refused("%s %s does not match %s" % (
            name, _short(value), schema["pattern"]), name, "pattern", value)


def check_object(value, schema, prefix=""):
    """Check the fields of the JSON object ``value`` against the object
    ``schema``: required ones present, no unknown ones (unless
    ``additionalProperties``), each valid."""
    properties = schema.get("properties", {})
    missing = [key for key in schema.get("required", ()) if key not in value]
    if missing:
        raise Refused("argument %s%s is required" % (prefix, missing[0]),
                      prefix + missing[0], "required", None)
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(value) - set(properties))
        if unknown:
            raise Refused("unknown argument(s): %s (send %s)" % (
                ", ".join(prefix + key for key in unknown), ", ".join(
                    properties)), prefix + unknown[0],
                "additionalProperties", None)
    for key, item in value.items():
        if key in properties:
            check(prefix + key, item, properties[key])
    return value


def refusal(exc, messages, schema):
    """Return :class:`ArgumentError` of the :class:`Refused` ``exc`` with
    the message ``messages[keyword]`` (formatted with ``name``, ``value``
    and the keywords of ``schema``) if there is one, else ``exc``."""
    template = (messages or {}).get(getattr(exc, "keyword", None))
    if template is None:
        return exc
    values = {key: value for key, value in schema.items()
              if isinstance(value, (int, float, str))}
    values.update(name=exc.field, value=exc.value)
    return ArgumentError(template % values, field=exc.field)


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Param:
    """One query parameter: its ``name``, OpenAPI ``schema`` (values may
    be functions of the configuration), ``description`` and ``default``
    (the value when it is not sent)."""

    def __init__(self, name, schema, description, default=None,
                 required=False, messages=None, prepare=None):
        self.name = name
        #: a function applied to a sent value first (e.g. to undo what a
        #: URL encoding did to it)
        self.prepare = prepare
        self.schema = schema
        self.description = description
        self.default = default
        self.required = required
        #: per schema keyword, the message of a value that breaks it
        #: (``%(name)s``, ``%(value)r`` and the schema's keywords)
        self.messages = messages or {}

    def openapi(self, config):
        """Return the OpenAPI parameter object."""
        return {"name": self.name, "in": "query",
                "required": self.required,
                "schema": resolve(self.schema, config),
                "description": self.description}

    def read(self, raw, config):
        """Return the value of the query value ``raw`` (a string, or None
        if not sent), converted and checked; raise :class:`ArgumentError`
        naming the parameter."""
        if raw is None:
            if self.required:
                raise ArgumentError("%s is required" % self.name,
                                    field=self.name)
            return self.default(config) if callable(
                self.default) else self.default
        if self.prepare is not None:
            raw = self.prepare(raw)
        schema = resolve(self.schema, config)
        if schema.get("format") == "date-time":
            return convert(self.name, raw, datetime.datetime)
        value = convert(self.name, raw, _QUERY_TYPES.get(schema.get("type")))
        try:
            return check(self.name, value, schema)
        except Refused as exc:
            raise refusal(exc, self.messages, schema) from None


class Body:
    """A JSON request body: an object of ``properties`` (name → schema),
    the ``required`` ones, and no others."""

    def __init__(self, properties, required=(), description="",
                 messages=None, example=None):
        self.properties = properties
        self.example = example
        self.required = tuple(required)
        self.description = description
        #: per property, per schema keyword: the message of a value that
        #: breaks it (see :class:`Param`)
        self.messages = messages or {}

    def schema(self, config):
        """Return the resolved OpenAPI schema of the body."""
        schema = {"type": "object", "additionalProperties": False,
                  "properties": resolve(self.properties, config)}
        if self.required:  # OpenAPI 3.0: a "required" list is not empty
            schema["required"] = list(self.required)
        return schema

    def openapi(self, config, media_types=("application/json",)):
        """Return the OpenAPI request body object."""
        media = {"schema": self.schema(config)}
        if self.example is not None:
            media["example"] = self.example
        return {"required": bool(self.required),
                "description": self.description,
                "content": {kind: dict(media) for kind in media_types}}

    def read(self, value, config):
        """Return the checked body ``value`` (a dict)."""
        schema = self.schema(config)
        try:
            return check_object(value, schema)
        except Refused as exc:
            raise refusal(exc, self.messages.get(exc.field), schema[
                "properties"].get(exc.field, {})) from None
