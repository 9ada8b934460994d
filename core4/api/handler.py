"""CoreRequestHandler: the base of every core4 API handler.

It authenticates the request (see :mod:`core4.api.auth`), checks access,
merges a JSON body with the query arguments, converts typed arguments and
answers everything, errors included, in one JSON envelope
(:mod:`core4.api.envelope`).
"""

import asyncio
import functools
import time
import traceback
import urllib.parse
import weakref

import pymongo
import tornado.httputil
import tornado.web
from bson import ObjectId

from core4.api import auth, envelope, throttle
from core4.api.arguments import ArgumentError, convert, parse_body
from core4.api.errors import (RETRY_AFTER, ApiError, login_required,
                              status_of)
from core4.error import Core4UserError, CoreDatabaseUnreachable
from core4.mongo.connection import short_error

REQUIRED = object()
#: the HTTP methods a handler may implement (see
#: :meth:`CoreRequestHandler.allowed_methods`)
HTTP_METHODS = ("get", "head", "post", "put", "delete", "patch", "options")
#: bytes of a JSON body parsed on the event loop; larger ones are parsed
#: in a thread, so no request holds the loop up for long
PARSE_ON_LOOP = 64 * 1024
#: query arguments whose values are never logged
SECRET_ARGUMENTS = ("password", "new_password", "token")


def safe_uri(uri):
    """Return ``uri`` with the values of :data:`SECRET_ARGUMENTS` masked
    (for logs: a password sent in a query must not end up there)."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return path + "?" + "&".join(
        "%s=%s" % (urllib.parse.quote(name), "***"
                   if name.lower() in SECRET_ARGUMENTS
                   else urllib.parse.quote(value)) for name, value in pairs)


def database_timeout(config):
    """Seconds the database operations of one blocking call of a request
    may take: ``mongo.server_timeout`` (to find the server) plus
    ``mongo.connect_timeout`` (to get an answer). Without such a bound a
    request on a pooled connection to a stalled server would wait until
    pymongo's monitor gives the server up (its heartbeat, 10 s, plus the
    connect timeout)."""
    return (float(config.mongo.server_timeout) +
            float(config.mongo.connect_timeout)) / 1000.0


def query_timeout(config):
    """Seconds the database operations of one blocking call of a request
    may take in all: ``api.max_time``, at most :func:`database_timeout`.
    pymongo sends each query the time left as ``maxTimeMS`` (a real
    MongoDB stops the query then; NX-27017 ignores it, so there only the
    bounded shape of each query keeps it short)."""
    return min(database_timeout(config),
               float(config.api.max_time) / 1000.0)


def bounded(timeout, function, *args, **kwargs):
    """Call ``function`` with its MongoDB operations limited to ``timeout``
    seconds in all (pymongo's client-side operation timeout)."""
    with pymongo.timeout(timeout):
        return function(*args, **kwargs)


class DatabaseState:
    """What one app server knows about its database, to answer at once in
    an outage.

    After a call failed because the database is away (a 503), the
    database counts as *down*: one call at a time (the probe) tries it
    again, every other call fails at once with 503 instead of taking a
    thread of the pool for up to :func:`database_timeout` seconds (a busy
    dashboard would otherwise queue requests behind the hanging ones, far
    past the timeout). The probe first pings the database; only its answer
    ends the outage (a call that succeeds may not have asked the database
    at all: a password hash, a cached answer). Only used on the server's
    event loop (no lock needed).
    """

    def __init__(self):
        self.down_since = None
        self.probing = False

    def admit(self):
        """Return ``"go"``, ``"probe"`` (the one call trying the database
        while it is down) or None (fail at once)."""
        if self.down_since is None:
            return "go"
        if self.probing:
            return None
        self.probing = True
        return "probe"

    def done(self, admitted, exc=None):
        """Record how an admitted call ended (``exc``: its exception); for
        the probe: how its ping ended."""
        if admitted == "probe":
            self.probing = False
            if exc is None:
                self.down_since = None  # the database answered the ping
        if isinstance(exc, Exception) and status_of(exc)[0] == 503 \
                and self.down_since is None:
            self.down_since = time.monotonic()

    def unavailable(self):
        """The error of a call refused while the database is down."""
        return CoreDatabaseUnreachable(
            "database unreachable for %.0f s, a request is trying it" % (
                time.monotonic() - self.down_since))


_STATES = weakref.WeakKeyDictionary()


def database_state(context):
    """The :class:`DatabaseState` of the app server of ``context``."""
    state = _STATES.get(context)
    if state is None:
        state = _STATES[context] = DatabaseState()
    return state


def _parse_later():
    """Stands for tornado's parsing of a form body before ``prepare``."""


class CoreRequestHandler(tornado.web.RequestHandler):
    """Base class of the request handlers of core4 and its projects.

    Class attributes a handler may set:

    ``public``
        True: no login needed (e.g. the login handler itself).
    ``access``
        ``"api"`` (default): the user needs an ``api://`` permission that
        matches the handler's qualified name and the HTTP method;
        ``"user"``: any logged-in user (the handler checks finer
        permissions itself); ``"admin"``: only users with ``cop``.
    ``spec``
        additions to the handler's OpenAPI operations, per lower-case
        method (``parameters``, ``requestBody``, ``responses``; see
        :mod:`core4.api.v1.spec`).
    ``openapi``
        True (default): the handler's routes are documented in the OpenAPI
        document (``/core4/api/v1/openapi.json``); set it to False for
        routes that are not part of the API (e.g. pages of a web app).
        Routes of handlers that are no ``CoreRequestHandler`` (e.g.
        tornado's ``StaticFileHandler``) are never documented.
    """

    public = False
    access = "api"
    spec = {}
    openapi = True

    def initialize(self, context=None, **kwargs):
        """Take the app server's :class:`~core4.api.server.ApiContext`
        and the rule's extra arguments (as attributes)."""
        self.context = context
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.request_id = ObjectId()
        self.user = None
        self.permissions = None
        self.json_arguments = {}
        self._json_body = False
        self._believe_trusted_proxy()
        # tornado parses a form body before prepare(): it is parsed after
        # the login is checked instead (see _parse_body)
        self._parse_form = self.request._parse_body
        self.request._parse_body = _parse_later

    def _believe_trusted_proxy(self):
        """Take the client's address and scheme from a trusted proxy's
        headers (``api.trusted_proxies``); from nobody else (the server
        runs without tornado's ``xheaders``, so ``request.remote_ip`` and
        ``request.protocol`` are the connection's own)."""
        if self.context is None or not throttle.from_trusted_proxy(self):
            return
        self.request.remote_ip = throttle.client_address(self)
        self.request.protocol = "https" if throttle.is_tls(self) else "http"

    @classmethod
    def body_limit(cls, config):
        """Bytes a request body of this handler may have (a larger one is
        refused with 413 before it is read): ``api.max_body_public`` for
        handlers that need no login, else ``api.max_body``. A handler that
        takes larger bodies (an upload) overrides this."""
        return int(config.api.max_body_public if cls.public
                   else config.api.max_body)

    @classmethod
    def allowed_methods(cls):
        """Return the HTTP methods the handler implements (upper case):
        those of its ``Allow`` header; every other one answers 405."""
        return [method.upper() for method in HTTP_METHODS
                if getattr(cls, method) is not getattr(
                    CoreRequestHandler, method)]

    @classmethod
    def qual_name(cls):
        """Return ``module.Class`` of the handler."""
        return "%s.%s" % (cls.__module__, cls.__qualname__)

    # request ----------------------------------------------------------------

    async def prepare(self):
        """Refuse a method the handler does not implement (405 with
        ``Allow``), authenticate, check access and parse the body (so a
        request without valid credentials learns nothing but 401, whatever
        its body)."""
        if self.request.method not in self.allowed_methods():
            raise tornado.web.HTTPError(405)
        login = await self.run(auth.login_with, self.context,
                               auth.credentials(self))
        if login is not None:
            self.user, self.permissions = login.user, login.permissions
            if login.fresh_token:
                self.set_header("Token", login.fresh_token)
                if login.via == "cookie":
                    auth.set_cookie(self, login.fresh_token)
        if not self.public:
            if self.user is None:
                raise login_required()
            if not self.may_access():
                raise ApiError(403, "%s %s is not permitted for %s" % (
                    self.request.method, self.request.path,
                    self.user["name"]))
        await self._parse_body()

    def may_access(self):
        """True if the logged-in user may call this handler's method."""
        if self.permissions.admin:
            return True
        if self.access == "user":
            return True
        if self.access == "admin":
            return False
        return self.permissions.can_call(self.qual_name(),
                                         self.request.method)

    async def _parse_body(self):
        try:
            self._parse_form()
        except tornado.httputil.HTTPInputError as exc:
            raise ApiError(400, "request body is malformed: %s" % (
                str(exc).splitlines()[0] if str(exc) else
                type(exc).__name__))
        body = self.request.body
        kind = self.request.headers.get("Content-Type", "")
        if not body or not (kind.startswith("application/json")
                            or body.lstrip()[:1] in (b"{", b"[")):
            return
        try:
            if len(body) > PARSE_ON_LOOP:
                value = await asyncio.get_running_loop().run_in_executor(
                    None, parse_body, body)
            else:
                value = parse_body(body)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "request body is not valid JSON: %s" % (
                str(exc).splitlines()[0] if str(exc) else
                type(exc).__name__))
        if not isinstance(value, dict):
            raise ApiError(400, "request body must be a JSON object")
        self.json_arguments = value
        # a JSON body sent as a form (e.g. curl -d) is no form field
        self._json_body = True

    def get_argument(self, name, default=REQUIRED, as_type=None):
        """Return the argument ``name`` from the JSON body or the query,
        converted to ``as_type`` (int, float, bool, str, dict, list,
        datetime, ObjectId); 400 if it is missing or cannot be converted."""
        if name in self.json_arguments:
            value = self.json_arguments[name]
        else:
            values = self.get_arguments(name)
            if not values:
                if default is REQUIRED:
                    raise ApiError(400, "argument %s is required" % name)
                return default
            value = values[-1]
        if value is None and default is not REQUIRED:
            return default
        try:
            return convert(name, value, as_type)
        except ArgumentError as exc:
            raise ApiError(400, str(exc), field=exc.field)

    def param(self, param):
        """Return the value of the query parameter ``param`` (a
        :class:`~core4.api.schema.Param`), converted and checked against
        its schema; 400 naming it if it is not valid."""
        if param.name in self.json_arguments:
            raw = self.json_arguments[param.name]
        else:
            values = self.get_arguments(param.name)
            raw = values[-1] if values else None
        try:
            return param.read(raw, self.context.config)
        except ArgumentError as exc:
            raise ApiError(400, str(exc), field=exc.field)

    def body(self, body, ignore=()):
        """Return the fields sent (the JSON body, and query or form
        arguments for the fields the JSON body does not hold) checked
        against ``body`` (a :class:`~core4.api.schema.Body`); 400 naming
        the first field that is missing, unknown or not valid. Fields
        named in ``ignore`` are left out."""
        fields = {key: value for key, value in self.json_arguments.items()
                  if key not in ignore}
        arguments = (self.request.query_arguments if self._json_body
                     else self.request.arguments)
        try:
            for name in arguments:
                if name not in fields and name not in ignore:
                    fields[name] = self._typed(
                        name, body.properties.get(name) or {})
            return body.read(fields, self.context.config)
        except ArgumentError as exc:
            raise ApiError(400, str(exc), field=exc.field)

    def _typed(self, name, schema):
        """The query or form argument ``name`` as the ``type`` of its
        ``schema`` says (an array: every value sent)."""
        values = self.get_arguments(name)
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind == "array":
            return values
        return convert(name, values[-1] if values else None, {
            "integer": int, "number": float, "boolean": bool,
            "object": dict}.get(kind))

    def get_arguments(self, name, strip=True):
        """Return the query (or form) values of argument ``name`` (not
        those of a JSON body: see :meth:`get_argument`)."""
        if self._json_body:
            return self.get_query_arguments(name, strip)
        return super().get_arguments(name, strip)

    def argument_names(self):
        """Return the names of all arguments sent (body and query)."""
        return set(self.json_arguments) | set(
            self.request.query_arguments if self._json_body
            else self.request.arguments)

    async def run(self, function, *args, **kwargs):
        """Run a blocking call (MongoDB, argon2) in the server's thread
        pool and return its result.

        Its database operations, together, wait at most
        :func:`query_timeout` seconds: in an outage, or when a query runs
        too long, the request ends in 503 (see
        :func:`~core4.api.errors.status_of`) instead of hanging on a
        connection that does not answer; while the database is known to be
        away it ends in 503 at once (see :class:`DatabaseState`)."""
        return await self.run_within(query_timeout(self.context.config),
                                     function, *args, **kwargs)

    async def run_within(self, seconds, function, *args, **kwargs):
        """:meth:`run` with the database operations of the call bounded by
        ``seconds`` (e.g. :func:`database_timeout` for a call that also
        waits for a child process)."""
        state = database_state(self.context)
        admitted = state.admit()
        if admitted is None:
            raise state.unavailable()
        loop = tornado.ioloop.IOLoop.current()
        if admitted == "probe":
            try:
                await loop.run_in_executor(
                    self.context.executor, functools.partial(
                        bounded, seconds, self.context.system.ping))
            except BaseException as exc:
                state.done(admitted, exc)
                raise
            state.done(admitted)
            admitted = "go"
        try:
            result = await loop.run_in_executor(
                self.context.executor, functools.partial(
                    bounded, seconds, function, *args, **kwargs))
        except BaseException as exc:
            state.done(admitted, exc)
            raise
        state.done(admitted)
        return result

    # response ---------------------------------------------------------------

    def reply(self, data=None, code=200, message=None, **paging):
        """Answer ``data`` in the envelope (with paging fields if given)."""
        self.set_status(code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(envelope.dumps(envelope.envelope(
            self.request_id, code, message or self._reason, data,
            **paging)))

    def write_error(self, status_code, **kwargs):
        """Answer every error in the envelope (traceback only in debug)."""
        message = None
        data = None
        exc_info = kwargs.get("exc_info")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        if exc_info is not None:
            status, message = status_of(exc_info[1])
            field = getattr(exc_info[1], "field", None)
            if field is not None:
                data = {"field": field}
            # send_error cleared the headers: those of the error count
            for name, value in getattr(exc_info[1], "headers", {}).items():
                self.set_header(name, value)
            if status != status_code:
                self.set_status(status)
                status_code = status
            if status == 503:
                self.set_header("Retry-After", str(RETRY_AFTER))
            if status == 500 and self.settings.get("debug"):
                data = {"traceback": traceback.format_exception(*exc_info)}
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(envelope.dumps(envelope.envelope(
            self.request_id, status_code, message or self._reason, data)))

    def log_exception(self, typ, value, tb):
        """Log server errors with their traceback; user errors and an
        unavailable database (503) in one line."""
        status, message = status_of(value)
        if status == 503 and not isinstance(value, tornado.web.HTTPError):
            # an outage: one line with the cause in short, no traceback
            tornado.log.gen_log.warning(
                "503 %s %s: %s (%s)", self.request.method,
                safe_uri(self.request.uri), message,
                short_error(value).splitlines()[0] if str(value) else
                type(value).__name__)
            return
        if status < 500 or isinstance(
                value, (Core4UserError, tornado.web.HTTPError)):
            log = (tornado.log.gen_log.info if status < 500
                   else tornado.log.gen_log.warning)
            log("%d %s %s: %s", status, self.request.method,
                safe_uri(self.request.uri), message or value)
            return
        tornado.log.app_log.error("%s %s: %s", self.request.method,
                                  safe_uri(self.request.uri), value,
                                  exc_info=(typ, value, tb))

    def _request_summary(self):
        """The request as tornado's access log shows it (secrets
        masked)."""
        return "%s %s (%s)" % (self.request.method,
                               safe_uri(self.request.uri),
                               self.request.remote_ip)

    def check_xsrf_cookie(self):
        """Cookies are SameSite=Strict; no separate XSRF token."""


@tornado.web.stream_request_body
class BodyTooLargeHandler(CoreRequestHandler):
    """Answers 413 for a request whose ``Content-Length`` is larger than
    its handler takes (see :meth:`CoreRequestHandler.body_limit`), before
    the body is read: the connection is closed after the answer.

    Rule arguments: ``limit`` (bytes) and ``length`` (bytes announced)."""

    public = True
    openapi = False
    limit = 0
    length = 0

    def prepare(self):
        """Refuse the request."""
        raise ApiError(413, "request body of %d bytes is too large: at most "
                       "%d bytes here" % (self.length, self.limit))

    def data_received(self, chunk):
        """Drop what arrives anyway."""


class NotFoundHandler(CoreRequestHandler):
    """Answers unknown paths with 404 in the envelope."""

    public = True

    def prepare(self):
        """Refuse every request."""
        raise ApiError(404, "no route %s" % self.request.path)
