"""HTTP status codes of core4's errors."""

import bson.errors
import pymongo.errors
import tornado.web

from core4.error import (Core4UserError, CoreDatabaseUnreachable,
                         CoreJobExists, CoreJobNotFound, CoreJobStateError)


#: the message of a 503: the database cannot be reached (an outage)
UNAVAILABLE = "database unreachable"
#: seconds a client should wait before it tries again after a 503
RETRY_AFTER = 5


class ApiError(tornado.web.HTTPError):
    """An error answered with ``status``, a one-line ``message``,
    ``headers`` (e.g. ``WWW-Authenticate`` of a 401) and the ``field`` of
    the request it is about (answered as ``data: {"field": ...}``)."""

    def __init__(self, status, message, headers=None, field=None):
        super().__init__(status, reason=None, log_message=None)
        self.message = message
        self.headers = dict(headers or {})
        self.field = field


def login_required(message="login required", scheme="Bearer"):
    """Return the 401 :class:`ApiError` with its challenge."""
    return ApiError(401, message, {
        "WWW-Authenticate": '%s realm="core4"' % scheme})


def status_of(exc):
    """Return ``(status, message)`` for an exception raised in a handler."""
    if isinstance(exc, ApiError):
        return exc.status_code, exc.message
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code, exc.log_message or exc.reason or None
    if isinstance(exc, CoreDatabaseUnreachable) or isinstance(
            exc, pymongo.errors.ConnectionFailure):
        return 503, UNAVAILABLE
    if isinstance(exc, pymongo.errors.PyMongoError) and exc.timeout:
        # the request's database time ran out (see handler.run): the
        # server is overloaded or stalled
        return 503, "database did not answer in time"
    if isinstance(exc, CoreJobNotFound):
        return 404, str(exc)
    if isinstance(exc, (CoreJobExists, CoreJobStateError)):
        return 409, str(exc)
    if isinstance(exc, Core4UserError):
        return getattr(exc, "status", 400), str(exc)
    if isinstance(exc, pymongo.errors.DuplicateKeyError):
        return 409, "it exists already"
    if isinstance(exc, (bson.errors.InvalidDocument,
                        pymongo.errors.DocumentTooLarge,
                        pymongo.errors.WriteError)):
        # what the client sent cannot be stored (e.g. job args nested too
        # deeply, too large, or with keys the server refuses)
        return 400, "the database refused the document: %s" % (
            str(exc).split("\n")[0].split(", full error:")[0][:200])
    return 500, None
