"""The tornado application of an app server (core4's own, or a project's
child, see :mod:`core4.api.child`), its listening sockets, its request
body limits and its access log."""

import errno
import json
import logging
import time

import tornado.netutil
import tornado.web

from core4.api import throttle
from core4.api.container import check_unique
from core4.api.handler import BodyTooLargeHandler, NotFoundHandler
from core4.api.metrics import metrics_rules
from core4.api.proxy import ProxyHandler
from core4.error import Core4UserError


def build_application(containers, context, proxies=(), debug=False):
    """Return the tornado application serving the enabled ``containers``
    and ``proxies`` (``[(root, target url, container name)]``: everything
    below ``root`` is relayed to ``target``, a project's server); refuse
    shared roots and routes (:class:`~core4.error.Core4UserError`)."""
    config = context.config
    served = [container for container in containers
              if container.settings(config)[0]]
    check_unique(served, config)
    roots = {container.settings(config)[1]: container.qual_name()
             for container in served}
    rules = []
    for root, target, name in proxies:
        if root in roots:
            raise Core4UserError("containers %s and %s both use root %r" % (
                roots[root], name, root or "/"))
        roots[root] = name
        project = name.split(".", 1)[0]
        rules.append((len(root), tornado.web.url(
            root + "(?:/.*)?", ProxyHandler,
            {"context": context, "target": target, "project": project})))
    for container in served:
        _, root = container.settings(config)
        for pattern, handler, kwargs in container.routes(config):
            rules.append((len(root), tornado.web.url(
                pattern, handler, dict(kwargs, context=context))))
    rules.extend(metrics_rules(context, rules))  # GET /metrics if enabled
    # longer roots first: "/" of a dashboard must not shadow the API
    rules.sort(key=lambda item: -item[0])
    app = CoreApplication(
        [rule for _, rule in rules], debug=debug, log_function=log_access,
        autoreload=False, cookie_secret=context.secrets["cookie"],
        default_handler_class=NotFoundHandler,
        default_handler_args={"context": context})
    app.core4_containers = served
    app.core4_context = context
    return app


class CoreApplication(tornado.web.Application):
    """The application of an app server: refuses a request whose announced
    body is larger than its handler takes with 413 before the body is read,
    and makes the connection stop reading a (chunked) body at that limit.
    """

    def get_handler_delegate(self, request, target_class, target_kwargs=None,
                             path_args=None, path_kwargs=None):
        """The delegate of ``target_class``, or of
        :class:`~core4.api.handler.BodyTooLargeHandler` for too large a
        body."""
        config = self.core4_context.config
        limiter = getattr(target_class, "body_limit", None)
        limit = limiter(config) if limiter else int(config.api.max_body)
        length = _content_length(request)
        if length is not None and length > limit:
            return super().get_handler_delegate(
                request, BodyTooLargeHandler, {
                    "context": self.core4_context, "limit": limit,
                    "length": length})
        if request.connection is not None:
            request.connection.set_max_body_size(limit)
        return super().get_handler_delegate(
            request, target_class, target_kwargs, path_args, path_kwargs)


def _content_length(request):
    """The announced body size in bytes, or None (none, or malformed:
    tornado refuses that itself)."""
    value = request.headers.get("Content-Length")
    try:
        return int(value.split(",")[0]) if value else None
    except ValueError:
        return None


# the access log -----------------------------------------------------------

ACCESS_LOG = logging.getLogger("core4.api.access")
ACCESS_LOG.propagate = False
_ACCESS_TAG = "_core4_access"


def setup_access_log(config):
    """Write :func:`log_access` lines to standard error if
    ``api.access_log`` (and not into ``sys_log``: one record per request
    would crowd out the rest)."""
    from core4.logger.setup import ConsoleHandler
    ACCESS_LOG.setLevel(logging.INFO)
    for handler in [h for h in ACCESS_LOG.handlers
                    if getattr(h, _ACCESS_TAG, False)]:
        ACCESS_LOG.removeHandler(handler)
    if not config.api.get("access_log", True):
        ACCESS_LOG.disabled = True
        return
    ACCESS_LOG.disabled = False
    handler = ConsoleHandler("stderr")
    formatter = logging.Formatter(
        "time=%(asctime)s.%(msecs)03dZ %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    setattr(handler, _ACCESS_TAG, True)
    ACCESS_LOG.addHandler(handler)


def _logfmt(value):
    """``value`` as a logfmt value: bare if it is one word, else quoted as
    a JSON string."""
    text = "-" if value is None or value == "" else str(value)
    if any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text


def log_access(handler):
    """Log one line per finished request (logfmt: ``key=value``):
    ``status``, ``method``, ``path`` (no query: it may hold a secret),
    ``user`` (``-`` without a login), ``client`` (the peer, or the client
    a trusted proxy names), ``peer`` (the connection's address),
    ``ms`` (duration) and ``id`` (the ``_id`` of the answer's envelope)."""
    if ACCESS_LOG.disabled:
        return
    request = handler.request
    user = getattr(handler, "user", None)
    peer = (throttle.peer_address(handler)
            if getattr(handler, "context", None) is not None
            else request.remote_ip)
    fields = (("status", handler.get_status()),
              ("method", request.method),
              ("path", request.path),
              ("user", user.get("name") if isinstance(user, dict) else None),
              ("client", request.remote_ip),
              ("peer", peer),
              ("ms", "%.1f" % (1000.0 * request.request_time())),
              ("id", getattr(handler, "request_id", None)))
    ACCESS_LOG.info(" ".join("%s=%s" % (key, _logfmt(value))
                             for key, value in fields))


def bind(port, address):
    """Return the listening sockets, or a clear error if the port is
    taken or the address invalid."""
    try:
        return tornado.netutil.bind_sockets(port, address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Core4UserError("port %s on %s is already in use" % (
                port, address)) from None
        raise Core4UserError("cannot listen on %s:%s: %s" % (
            address, port, exc.strerror or exc)) from None
