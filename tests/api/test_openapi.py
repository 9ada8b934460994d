"""The OpenAPI document (``/core4/api/v1/openapi.json``): a valid OpenAPI 3
document of exactly the routes and methods the running app server serves,
and a property-based fuzzer (schemathesis) run against it that must find
no 5xx and no answer the document does not describe."""

import importlib
import os
import re

import hypothesis
import pytest
import schemathesis
import tornado.web
from bson import ObjectId
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import definitions
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from core4.api.container import CoreApiContainer
from core4.api.handler import CoreRequestHandler
from core4.api.v1 import spec
from core4.api.v1.apidoc import _Application
from core4.api.v1.container import CoreApiServer
from core4.api.v1.openapi import (METHODS, build_document, documented,
                                  implemented, path_of)
from core4.config import get_config
from tests.api.conftest import ADMIN_PASSWORD, API, unique
from tests.api.test_auth import DUMMY
from tests.appserver import start_app_server, stop_app_server
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


# fuzzing ----------------------------------------------------------------------

#: checks every fuzzed answer must pass
CHECKS = [not_a_server_error, status_code_conformance,
          content_type_conformance, response_schema_conformance]
#: examples per operation and generation mode
EXAMPLES = 20
#: headers that frame the HTTP message: a malformed one (Hypothesis draws
#: strings like "content-length" from the constants of core4's modules) is
#: answered by Tornado's HTTP layer with a bare 400 before any core4 code
#: runs, so the fuzzer never sends them
FRAMING = {"content-length", "transfer-encoding", "host", "connection"}


@pytest.fixture(scope="module")
def fuzz_api(api_env):
    """An app server of its own for the fuzzer (it may pause the queue,
    create users, kill jobs ...), with short follows; no worker runs, so
    its jobs stay pending."""
    server = start_app_server(
        api_env, "fuzz%d" % os.getpid(), "fuzz",
        CORE4_OPTION_api__follow_timeout="!!float 0.1",
        CORE4_OPTION_api__follow_interval="!!float 0.05")
    yield server
    stop_app_server(server, drop=True)


def _existing_id(server, path):
    """The id of a fresh pending job (for ``/job/{_id}...``) or of a new
    role (for ``/roles/{_id}``), so the fuzzer gets past "not found"."""
    if path.startswith(API + "/job/"):
        response = server.request("POST", API + "/job", token=server.admin,
                                  json={"qual_name": DUMMY,
                                        "args": {"fuzz": unique()}})
    else:
        response = server.request("POST", API + "/roles", token=server.admin,
                                  json={"name": unique("fuzz")})
    assert response.status_code == 201, response.text
    return response.json()["data"]["_id"]


def _run(server, operation, headers, mode, path_parameters=None,
         examples=EXAMPLES, answers=None):
    """Fuzz one operation; return None or the failure's text. The status
    codes of the answers are added to the list ``answers``."""
    @hypothesis.settings(
        max_examples=examples, derandomize=True, database=None,
        deadline=None, suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @hypothesis.given(case=operation.as_strategy(
        mode, path_parameters=path_parameters))
    def run(case):
        for name in list(case.headers or ()):
            if name.strip().lower() in FRAMING:
                del case.headers[name]
        response = case.call_and_validate(
            base_url=server.url, headers=headers, checks=CHECKS, timeout=30)
        if answers is not None:
            answers.append(response.status_code)
    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        return None  # nothing negative to send (no parameters)
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - shown
        return "%s %s (%s%s): %s" % (
            operation.method.upper(), operation.path, mode.value,
            ", existing id" if path_parameters else "", str(exc)[:1500])
    return None


def fuzz(server, headers, exclude=(), existing=False, refused=None):
    """Run the fuzzer over every operation (but ``exclude``d
    ``(METHOD, path)``) in both generation modes (and, with ``existing``,
    with the id of an existing job or role); return the failures.
    Operations that need a login get ``refused`` examples (if given:
    without one they all answer 401), public ones none with ``headers``
    (they are fuzzed without)."""
    schema = schemathesis.openapi.from_url(server.url + DOC)
    failures, answers = [], {}
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        public = operation.definition.raw.get("security") == []
        if key in exclude or (public and headers):
            continue
        answers[key] = []
        examples = EXAMPLES
        if refused is not None and not public:
            examples = refused
        runs = [(mode, None) for mode in (GenerationMode.POSITIVE,
                                          GenerationMode.NEGATIVE)]
        if existing and "{_id}" in operation.path:
            runs.append((GenerationMode.POSITIVE, {
                "_id": _existing_id(server, operation.path)}))
        for mode, path_parameters in runs:
            failure = _run(server, operation, headers, mode, path_parameters,
                           examples, answers[key])
            if failure:
                failures.append(failure)
    if failures:
        return failures
    # every operation was called (schemathesis leaves out the document's
    # own operation) and, with a login, got past the login
    expected = {(method.upper(), path) for (path, method), op in operations(
        server.request("GET", DOC).json()).items() if path != DOC and not (
            headers and op.get("security") == [])} - set(exclude)
    assert set(answers) == expected
    assert all(answers.values()), answers
    if headers:
        assert not [key for key, codes in answers.items()
                    if set(codes) <= {401, 403}], answers
    return failures


def test_fuzz_as_admin_finds_no_server_error(fuzz_api):
    # changing the own password would end the token used for the rest
    failures = fuzz(fuzz_api, {"Authorization": "Bearer " + fuzz_api.admin},
                    exclude={("PUT", API + "/profile")}, existing=True)
    assert not failures, "\n\n".join(failures)
    assert fuzz_api.login("admin", ADMIN_PASSWORD)


def test_fuzz_profile_change_finds_no_server_error(fuzz_api):
    """PUT /profile on a user of its own (a changed password ends the
    token: later examples answer 401, which is documented)."""
    _, token = fuzz_api.create_user([])
    schema = schemathesis.openapi.from_url(fuzz_api.url + DOC)
    operation = schema[API + "/profile"]["PUT"]
    failures = [_run(fuzz_api, operation, {"Authorization": "Bearer " +
                                           token}, mode, examples=10)
                for mode in GenerationMode]
    assert failures == [None, None], failures


def test_fuzz_without_login_finds_no_server_error(fuzz_api):
    failures = fuzz(fuzz_api, {}, refused=5)
    assert not failures, "\n\n".join(failures)
