"""OpenAPI operations of the app server's handlers.

core4's own handlers are described by their contract
(:mod:`core4.api.v1.contract`): the same parameters and bodies the
handlers read and check, typed answers and links between operations.
Every handler is also described from its docstrings; a handler (e.g. of a
project) adds to that with its ``spec`` class attribute: per lower-case
method the OpenAPI ``parameters`` (query parameters; path parameters come
from the route), the ``requestBody`` and ``responses`` (which replace the
default ones), e.g.::

    spec = {"get": {"parameters": [{"name": "q", "in": "query",
                                    "schema": {"type": "string"}}]}}
"""

import inspect

from core4.api.schema import resolve
from core4.api.v1.contract import OPERATIONS, SCHEMAS
from core4.api.v1.contract.common import ID as ID_SCHEMA, envelope
from core4.api.v1.contract.ref import ref

#: a path group of an id (jobs, users, roles, services)
ID = r"([0-9a-fA-F]{24})"
STRING = {"type": "string"}
#: the errors every operation may answer: bad input, a body too large,
#: the database unreachable
COMMON_ERRORS = {
    "400": "bad input: the message names the field (data.field)",
    "413": "the request body is too large",
    "503": "the database cannot be reached (Retry-After)"}
#: the errors of an operation that needs a login
LOGIN_ERRORS = {
    "401": "no valid login (WWW-Authenticate)",
    "403": "the user may not do this",
    "429": "too many failed logins of this user or address (Retry-After)"}
#: errors of some operations
ERROR_TEXT = {"404": "not found", "409": "conflict with the current state",
              "429": "too many failed logins (Retry-After)",
              "401": "wrong credentials", "403": "refused"}
#: operations with more errors than :data:`COMMON_ERRORS`
MORE_ERRORS = {"enqueueJob": ["404", "409"], "removeJob": ["409"],
               "killJob": ["409"], "restartJob": ["409"],
               "stopService": ["409"], "createRole": ["409"],
               "updateRole": ["409"], "deleteRole": ["409"],
               "login": ["401", "429"],
               "loginBasic": ["401", "429"], "changePassword": ["429"]}


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


def contract_of(handler, method, kwargs):
    """Return the contract of ``method`` of one of core4's handlers (see
    :mod:`core4.api.v1.contract`), or None."""
    if not handler.__module__.startswith("core4.api."):
        return None
    return OPERATIONS.get((handler.__name__, method) + tuple(
        str(value) for value in kwargs.values())) or OPERATIONS.get(
            (handler.__name__, method))


def _error(text):
    return {"description": text, "content": {"application/json": {
        "schema": ref("Error")}}}


def _responses(handler, contract, params, config):
    """The responses of an operation with a ``contract``."""
    content = contract.get("content", "application/json")
    if content != "application/json":
        schema = contract.get("schema", STRING)
    elif contract.get("envelope", True):
        schema = envelope(resolve(contract.get("data", {}), config),
                          contract.get("paging", False))
    else:
        schema = contract.get("data", {})
    ok = {"description": contract.get("description") or "success",
          "content": {content: {"schema": schema}}}
    if contract.get("links"):
        ok["links"] = contract["links"]
    if contract.get("response_headers"):
        ok["headers"] = contract["response_headers"]
    responses = {contract.get("status", "200"): ok}
    errors = dict(COMMON_ERRORS)
    if not handler.public:
        errors.update(LOGIN_ERRORS)
    if any(p["in"] == "path" for p in params):
        errors["404"] = "no such job, user or role"
    for code in MORE_ERRORS.get(contract.get("operationId"), ()):
        errors.setdefault(code, ERROR_TEXT[code])
    responses.update({code: _error(text) for code, text in errors.items()})
    return responses


def _generic_responses(handler, extra):
    """The responses of a handler without a contract (e.g. a project's):
    the envelope with any ``data``."""
    ok = {"description": "success", "content": {
        extra.get("responses_content", "application/json"): {
            "schema": extra.get("responses_schema") or ref("Envelope")}}}
    errors = dict(COMMON_ERRORS)
    if not handler.public:
        errors.update(LOGIN_ERRORS)
    errors.update({code: ERROR_TEXT.get(code, "error")
                   for code in ("404", "409")})
    errors.update({code: ERROR_TEXT.get(code, "error")
                   for code in extra.get("errors", ())})
    responses = {"200": ok, "201": ok}
    responses.update({code: _error(text) for code, text in errors.items()})
    return responses


def operation(handler, method, kwargs, params, config):
    """Return the OpenAPI operation of ``method`` of ``handler``: from
    its docstrings, its contract (core4's handlers) and its ``spec``."""
    contract = contract_of(handler, method, kwargs) or {}
    extra = (getattr(handler, "spec", None) or {}).get(method, {})
    doc = inspect.getdoc(getattr(handler, method)) or ""
    described = inspect.getdoc(handler) or ""
    if contract.get("description"):
        described += "\n\n" + contract["description"]
    parameters = list(params) + list(contract.get("headers", ())) + [
        param.openapi(config) for param in contract.get("parameters", ())]
    result = {"summary": extra.get("summary") or " ".join(
        doc.split("\n\n")[0].split()) or handler.__name__,
        "description": described,
        "operationId": contract.get("operationId") or "%s.%s%s" % (
            handler.__name__, method, "".join(
                "." + str(v) for v in kwargs.values())),
        "parameters": parameters + list(extra.get("parameters", []))}
    if contract:
        result["responses"] = _responses(handler, contract, parameters,
                                         config)
    else:
        result["responses"] = extra.get("responses") or \
            _generic_responses(handler, extra)
    if "body" in contract:
        result["requestBody"] = contract["body"].openapi(
            config, contract.get("media_types", ("application/json",)))
    if "requestBody" in extra:
        result["requestBody"] = extra["requestBody"]
    if handler.public:
        result["security"] = []
    return result


def components(config):
    """Return the shared schemas and security schemes."""
    schemas = {name: resolve(schema, config)
               for name, schema in SCHEMAS.items()}
    schemas["Envelope"] = {
        "type": "object", "description": "the envelope of an answer of a "
        "handler without a contract (e.g. a project's)",
        "properties": {
            "_id": STRING, "timestamp": STRING, "code": {"type": "integer"},
            "message": {"type": "string", "nullable": True},
            "data": {"nullable": True},
            **{key: {"type": "integer"} for key in (
                "page", "per_page", "page_count", "total_count", "count")}},
        "required": ["_id", "timestamp", "code", "message"]}
    return {
        "schemas": schemas,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "bearerFormat": "JWT"},
            "basic": {"type": "http", "scheme": "basic"},
            "cookie": {"type": "apiKey", "in": "cookie",
                       "name": "core4_token"}}}
