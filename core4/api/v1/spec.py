"""OpenAPI descriptions of the v1 handlers: parameters, bodies and
responses per ``(handler class name, method)`` of core4's own handlers
(:data:`OPERATIONS`).

Every handler is described from its docstrings; a handler (e.g. of a
project) adds to that with its ``spec`` class attribute: per lower-case
method the OpenAPI ``parameters`` (query parameters; path parameters come
from the route), the ``requestBody`` and ``responses`` (which replace the
default ones), e.g.::

    spec = {"get": {"parameters": [{"name": "q", "in": "query",
                                    "schema": {"type": "string"}}]}}
"""

import inspect

from core4.api import password, role
from core4.api.v1.job import ID
from core4.api.v1.jobdoc import SORT_FIELDS
from core4.queue import events, states

ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
DATETIME = {"type": "string", "format": "date-time"}


def _query(name, schema, description, required=False):
    return {"name": name, "in": "query", "required": required,
            "schema": schema, "description": description}


def _body(properties, required=()):
    schema = {"type": "object", "properties": properties,
              "additionalProperties": False}
    if required:  # OpenAPI 3.0: a "required" list must not be empty
        schema["required"] = list(required)
    return {"required": bool(required), "content": {"application/json": {
        "schema": schema}}}


PASSWORD = {"type": "string", "minLength": password.MIN_LENGTH,
            "maxLength": password.MAX_LENGTH}
ROLE_FIELDS = {
    "name": {"type": "string", "pattern": role.NAME.pattern},
    "realname": {"type": "string", "nullable": True},
    "email": {"type": "string", "nullable": True,
              "pattern": role.EMAIL.pattern},
    "password": dict(PASSWORD, nullable=True),
    "is_active": BOOLEAN,
    "roles": {"type": "array", "items": STRING},
    "permissions": {"type": "array", "items": STRING}}

#: one server-sent event of ``GET /job/<id>/follow`` (``data`` is JSON)
SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["state", "log", "close"]},
    "data": STRING}}

OPERATIONS = {
    ("LoginHandler", "post"): {"requestBody": _body(
        {"username": STRING, "password": STRING},
        ("username", "password")), "errors": ["401"]},
    ("LoginHandler", "get"): {"errors": ["401"]},
    ("ProfileHandler", "put"): {"requestBody": _body(
        {"password": STRING, "new_password": PASSWORD},
        ("password", "new_password"))},
    ("JobHandler", "get"): {"parameters": [
        _query("page", {"type": "integer", "minimum": 0},
               "page number, from 0"),
        _query("per_page", {"type": "integer", "minimum": 1},
               "jobs per page (at most api.max_per_page)"),
        _query("state", {"type": "string", "enum": list(states.ALL)},
               "only jobs in this state"),
        _query("name", STRING, "only jobs whose name starts with this"),
        _query("user", STRING, "only jobs enqueued by this user"),
        _query("since", DATETIME, "enqueued at or after"),
        _query("until", DATETIME, "enqueued before"),
        _query("sort", {"type": "string", "enum": list(SORT_FIELDS) + [
            "-" + name for name in SORT_FIELDS]},
               "field to sort by, - for descending"),
        _query("source", {"type": "string", "enum": ["queue", "journal"]},
               "the queue (default) or the journal")]},
    ("JobHandler", "post"): {"requestBody": _body(
        {"qual_name": STRING, "args": {"type": "object"}}, ("qual_name",))},
    ("JobListHandler", "get"): {"parameters": [
        _query("search", STRING, "job name with * and ? wildcards")]},
    ("JobLogHandler", "get"): {"parameters": [
        _query("limit", {"type": "integer", "minimum": 1,
                         "maximum": 10000}, "the latest records")]},
    ("JobFollowHandler", "get"): {"responses_content": "text/event-stream",
                                  "responses_schema": SSE_EVENT},
    ("QueueHistoryHandler", "get"): {"parameters": [
        _query("since", DATETIME, "start (default one hour ago)"),
        _query("until", DATETIME, "end (default now)"),
        _query("interval", {"type": "number", "exclusiveMinimum": True,
                            "minimum": 0}, "seconds per bucket")]},
    ("MaintenanceHandler", "put"): {"requestBody": _body(
        {"paused": BOOLEAN, "project": {
            "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}},
        ("paused",))},
    ("RoleHandler", "post"): {"requestBody": _body(ROLE_FIELDS, ("name",))},
    ("RoleItemHandler", "put"): {"requestBody": _body(
        dict(ROLE_FIELDS, etag=STRING))},
    ("RoleItemHandler", "delete"): {"parameters": [
        _query("etag", STRING, "the etag read (or If-Match)")]},
    ("AuditHandler", "get"): {"parameters": [
        _query("page", {"type": "integer", "minimum": 0},
               "page number, from 0"),
        _query("per_page", {"type": "integer", "minimum": 1},
               "records per page (at most api.max_per_page)"),
        _query("user", STRING, "only records of this user"),
        _query("action", {"type": "string", "enum": list(
            events.AUDIT_ACTIONS)}, "only records of this action"),
        _query("since", DATETIME, "created at or after"),
        _query("until", DATETIME, "created before")]},
    ("OpenApiHandler", "get"): {"responses_schema": {"type": "object"}},
}


def path_parameters(pattern):
    """Return the OpenAPI path parameters of a route pattern."""
    count = pattern.count(ID)
    params = [{"name": "_id" if i == 0 else "_id%d" % i, "in": "path",
               "required": True, "schema": ID_SCHEMA,
               "description": "a job, user or role id"}
              for i in range(count)]
    others = pattern.replace(ID, "").count("(") - pattern.replace(
        ID, "").count("(?")
    params.extend({"name": "arg%d" % i, "in": "path", "required": True,
                   "schema": STRING} for i in range(others))
    return params


def _responses(handler, content, schema=None, errors=()):
    if schema is None:
        schema = ({"$ref": "#/components/schemas/Envelope"}
                  if content == "application/json" else {"type": "string"})
    ok = {"description": "success", "content": {content: {
        "schema": schema}}}
    error = {"description": "error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Envelope"}}}}
    responses = {"200": ok, "201": ok, "400": error, "404": error,
                 "405": error, "409": error, "503": error}
    if not handler.public:
        responses.update({"401": error, "403": error})
    responses.update({code: error for code in errors})
    return responses


def operation(handler, method, kwargs, params):
    """Return the OpenAPI operation of ``method`` of ``handler``: from
    its docstrings, :data:`OPERATIONS` (core4's handlers) and the
    handler's ``spec``."""
    extra = {}
    if handler.__module__.startswith("core4.api."):
        extra.update(OPERATIONS.get((handler.__name__, method), {}))
    extra.update((getattr(handler, "spec", None) or {}).get(method, {}))
    doc = inspect.getdoc(getattr(handler, method)) or ""
    described = inspect.getdoc(handler) or ""
    result = {"summary": " ".join(doc.split("\n\n")[0].split()) or
              handler.__name__,
              "description": described,
              "operationId": "%s.%s%s" % (handler.__name__, method, "".join(
                  "." + str(v) for v in kwargs.values())),
              "parameters": list(params) + extra.get("parameters", []),
              "responses": extra.get("responses") or _responses(
                  handler, extra.get("responses_content",
                                     "application/json"),
                  extra.get("responses_schema"), extra.get("errors", ()))}
    if "requestBody" in extra:
        result["requestBody"] = extra["requestBody"]
    if handler.public:
        result["security"] = []
    return result


def components():
    """Return the shared schemas and security schemes."""
    return {
        "schemas": {"Envelope": {"type": "object", "properties": {
            "_id": STRING, "timestamp": DATETIME, "code": INTEGER,
            "message": {"type": "string", "nullable": True},
            "data": {"nullable": True}, "page": INTEGER,
            "per_page": INTEGER, "page_count": INTEGER,
            "total_count": INTEGER, "count": INTEGER},
            "required": ["_id", "timestamp", "code", "message"]}},
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "bearerFormat": "JWT"},
            "basic": {"type": "http", "scheme": "basic"},
            "cookie": {"type": "apiKey", "in": "cookie",
                       "name": "core4_token"}}}
