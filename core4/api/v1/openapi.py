"""The OpenAPI 3 document of the app server's routes, built from the
registered rules and each handler's ``spec`` (see
:mod:`core4.api.v1.spec`).

Only API routes are documented: those whose handler is a
:class:`~core4.api.handler.CoreRequestHandler` that does not set
``openapi = False`` (see :func:`documented`). Static files and pages of
web apps (e.g. the dashboard's handlers) set it, or are no
``CoreRequestHandler`` at all, and are left out.
"""

import re

import core4
from core4.api.handler import CoreRequestHandler

METHODS = ("get", "post", "put", "delete", "patch")
_GROUP = re.compile(r"\((?!\?)[^)]*\)")


def path_of(pattern, names):
    """Turn a route pattern into an OpenAPI path (groups → ``{name}``)."""
    names = list(names)
    path = _GROUP.sub(lambda m: "{%s}" % names.pop(0), pattern)
    return path.replace("\\", "")


def implemented(handler):
    """Return the HTTP methods ``handler`` implements (of
    :data:`METHODS`)."""
    allowed = handler.allowed_methods()
    return [method for method in METHODS if method.upper() in allowed]


def documented(handler):
    """True if the routes of ``handler`` belong in the OpenAPI document:
    a :class:`CoreRequestHandler` not marked ``openapi = False``."""
    return (isinstance(handler, type)
            and issubclass(handler, CoreRequestHandler)
            and bool(getattr(handler, "openapi", True)))


def build_document(app):
    """Return the OpenAPI document of ``app``'s containers (the routes of
    :func:`documented` handlers)."""
    from core4.api.v1 import spec
    config = app.core4_context.config
    paths = {}
    for container in app.core4_containers:
        for pattern, handler, kwargs in container.routes(config):
            if not documented(handler):
                continue
            params = spec.path_parameters(pattern)
            path = path_of(pattern, [p["name"] for p in params])
            item = paths.setdefault(path, {})
            for method in implemented(handler):
                item[method] = spec.operation(handler, method, kwargs,
                                              params, config)
    return {
        "openapi": "3.0.3",
        "info": {"title": "core4 API", "version": core4.__version__,
                 "description": "The REST API of core4. Every response is "
                 "the JSON envelope {_id, timestamp, code, message, data}; "
                 "an error's message says what is wrong in one line and, "
                 "for bad input, data.field names the field. A method a "
                 "path does not serve answers 405 with Allow."},
        "servers": [{"url": "/"}],
        "components": spec.components(config),
        "security": [{"bearer": []}, {"basic": []}, {"cookie": []}],
        "paths": paths}


class OpenApiHandler(CoreRequestHandler):
    """``GET /openapi.json``: this document (public)."""

    public = True

    def get(self):
        """Answer the OpenAPI document itself (no envelope)."""
        self.set_header("Content-Type", "application/json")
        from core4.api.envelope import dumps
        self.finish(dumps(build_document(self.application)))
