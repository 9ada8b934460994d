"""CoreRequestHandler: the base of every core4 API handler.

It authenticates the request (see :mod:`core4.api.auth`), checks access,
merges a JSON body with the query arguments, converts typed arguments and
answers everything, errors included, in one JSON envelope
(:mod:`core4.api.envelope`).
"""

import functools
import json
import traceback

import tornado.web
from bson import ObjectId

from core4.api import auth, envelope
from core4.api.arguments import ArgumentError, convert
from core4.api.errors import ApiError, status_of
from core4.error import Core4UserError

REQUIRED = object()


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
        the OpenAPI operations of the handler, per lower-case method.
    """

    public = False
    access = "api"
    spec = {}

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

    @classmethod
    def qual_name(cls):
        """Return ``module.Class`` of the handler."""
        return "%s.%s" % (cls.__module__, cls.__qualname__)

    # request ----------------------------------------------------------------

    async def prepare(self):
        """Parse the body, authenticate and check access."""
        self._parse_body()
        login = await self.run(auth.login_with, self.context,
                               auth.credentials(self))
        if login is not None:
            self.user, self.permissions = login.user, login.permissions
            if login.fresh_token:
                self.set_header("Token", login.fresh_token)
                if login.via == "cookie":
                    auth.set_cookie(self, login.fresh_token)
        if self.public:
            return
        if self.user is None:
            self.set_header("WWW-Authenticate", 'Bearer realm="core4"')
            raise ApiError(401, "login required")
        if not self.may_access():
            raise ApiError(403, "%s %s is not permitted for %s" % (
                self.request.method, self.request.path, self.user["name"]))

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

    def _parse_body(self):
        body = self.request.body
        kind = self.request.headers.get("Content-Type", "")
        if not body or not (kind.startswith("application/json")
                            or body.lstrip()[:1] in (b"{", b"[")):
            return
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "request body is not valid JSON: %s" % exc)
        if not isinstance(value, dict):
            raise ApiError(400, "request body must be a JSON object")
        self.json_arguments = value

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
            raise ApiError(400, str(exc))

    def argument_names(self):
        """Return the names of all arguments sent (body and query)."""
        return set(self.json_arguments) | set(self.request.arguments)

    async def run(self, function, *args, **kwargs):
        """Run a blocking call (MongoDB, argon2) in the server's thread
        pool and return its result."""
        loop = tornado.ioloop.IOLoop.current()
        return await loop.run_in_executor(
            self.context.executor, functools.partial(function, *args,
                                                     **kwargs))

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
        if exc_info is not None:
            status, message = status_of(exc_info[1])
            if status != status_code:
                self.set_status(status)
                status_code = status
            if status == 500 and self.settings.get("debug"):
                data = {"traceback": traceback.format_exception(*exc_info)}
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(envelope.dumps(envelope.envelope(
            self.request_id, status_code, message or self._reason, data)))

    def log_exception(self, typ, value, tb):
        """Log server errors with their traceback, user errors in one
        line."""
        status, _ = status_of(value)
        if status < 500 or isinstance(value, Core4UserError):
            tornado.log.gen_log.info("%d %s %s: %s", status,
                                     self.request.method, self.request.uri,
                                     value)
            return
        super().log_exception(typ, value, tb)

    def check_xsrf_cookie(self):
        """Cookies are SameSite=Strict; no separate XSRF token."""


class NotFoundHandler(CoreRequestHandler):
    """Answers unknown paths with 404 in the envelope."""

    public = True

    def prepare(self):
        """Refuse every request."""
        raise ApiError(404, "no route %s" % self.request.path)
