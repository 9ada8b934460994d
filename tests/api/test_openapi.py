"""The OpenAPI document (``/core4/api/v1/openapi.json``): a valid OpenAPI 3
document of exactly the routes and methods the running app server serves
(schemathesis runs against it in :mod:`tests.api.test_contract`)."""

import importlib
import re

import pytest
import tornado.web
from bson import ObjectId
from schemathesis.specs.openapi import definitions

from core4.api.container import CoreApiContainer
from core4.api.handler import CoreRequestHandler
from core4.api.v1 import spec
from core4.api.v1.apidoc import _Application
from core4.api.v1.container import CoreApiServer
from core4.api.v1.openapi import (METHODS, build_document, documented,
                                  implemented, path_of)
from core4.config import get_config
from tests.api.conftest import API
from tests.support import wait_for

DOC = API + "/openapi.json"


def routes_of(containers):
    """``{(OpenAPI path, method)}`` of the documented handlers of
    ``containers`` (the expectation, from the registered rules)."""
    result = set()
    for container in containers:
        for pattern, handler, _ in container.routes(get_config()):
            if not documented(handler):
                continue
            params = spec.path_parameters(pattern)
            path = path_of(pattern, [p["name"] for p in params])
            result.update((path, method) for method in implemented(handler))
    return result


def operations(doc):
    """``{(path, method): operation}`` of an OpenAPI document."""
    return {(path, method): op for path, item in doc["paths"].items()
            for method, op in item.items()}


@pytest.fixture(scope="module")
def document(api):
    """The document as the shared app server answers it (no login)."""
    response = api.request("GET", DOC)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def test_document_is_valid_openapi_3(document):
    errors = ["%s at %s" % (error.message, "/".join(map(
        str, error.instance_path))) for error in
        definitions.OPENAPI_30_VALIDATOR.iter_errors(document)]
    assert not errors, errors
    assert document["openapi"].startswith("3.")
    ids = [op["operationId"] for op in operations(document).values()]
    assert len(ids) == len(set(ids))
    for (path, method), op in operations(document).items():
        names = re.findall(r"\{([^}]+)\}", path)
        declared = [p["name"] for p in op["parameters"] if p["in"] == "path"]
        assert names == declared, (path, method)
        for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"',
                              str(op).replace("'", '"')):
            assert ref in document["components"]["schemas"]


def test_document_lists_exactly_the_served_routes(api, document):
    # the containers the running server registered itself with (those of
    # core4; projects' containers are served by their own environment)
    daemon = wait_for(lambda: api.db.sys_worker.find_one(
        {"kind": "app", "phase": "loop"}), 10, message="the app server")
    names = [name for name in daemon["containers"]
             if name.startswith("core4.")]
    assert CoreApiServer.qual_name() in names
    containers = []
    for name in names:
        module, _, cls = name.rpartition(".")
        containers.append(getattr(importlib.import_module(module), cls))
    expected = routes_of(containers)
    assert set(operations(document)) == expected
    assert routes_of([CoreApiServer]) <= expected


def test_live_server_serves_each_documented_method_only(api, document):
    """Each documented path answers its documented methods (not with
    "no route" or 405) and refuses every other method with 405."""
    missing = str(ObjectId())
    wrong = []
    for path, item in document["paths"].items():
        url = re.sub(r"\{[^}]+\}", missing, path)
        for method in METHODS:
            response = api.request(method.upper(), url, token=api.admin)
            body = response.json()
            if method in item:
                if response.status_code == 405 or str(
                        body.get("message")).startswith("no route"):
                    wrong.append("%s %s: %s" % (method, path, body))
            elif response.status_code != 405:
                wrong.append("%s %s undocumented but %d" % (
                    method, path, response.status_code))
    assert not wrong, "\n".join(wrong)


def test_documented_security_matches_the_server(api, document):
    missing = str(ObjectId())
    for (path, method), op in operations(document).items():
        response = api.request(method.upper(),
                               re.sub(r"\{[^}]+\}", missing, path))
        if op.get("security") == []:
            continue  # public
        assert response.status_code == 401, (path, method)
        assert {"401", "403"} <= set(op["responses"]), (path, method)
    public = {path for (path, _), op in operations(document).items()
              if op.get("security") == []}
    assert public == {API + "/login", API + "/logout", DOC}


class _Page(CoreRequestHandler):
    """A web page, not part of the API."""

    openapi = False

    def get(self):
        """Answer a page."""


class _Api(CoreRequestHandler):
    """An API handler of a project."""

    spec = {"get": {"parameters": [{"name": "q", "in": "query",
                                    "schema": {"type": "string"}}]}}

    def get(self):
        """Answer something."""

    def delete(self):
        """Remove something."""


class _Dashboard(CoreApiContainer):
    root = ""
    rules = [("/", _Page), ("/static/(.*)", tornado.web.StaticFileHandler,
                            {"path": "/tmp"}), ("/api/thing", _Api)]


def test_only_api_handlers_are_documented():
    doc = build_document(_Application([_Dashboard], get_config()))
    assert set(operations(doc)) == {("/api/thing", "get"),
                                    ("/api/thing", "delete")}
    op = doc["paths"]["/api/thing"]["get"]
    assert op["parameters"] == _Api.spec["get"]["parameters"]
    assert op["summary"] == "Answer something."
    assert not list(definitions.OPENAPI_30_VALIDATOR.iter_errors(doc))
    assert CoreRequestHandler.openapi is True
