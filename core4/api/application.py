"""The tornado application of an app server (core4's own, or a project's
child, see :mod:`core4.api.child`) and its listening sockets."""

import errno

import tornado.netutil
import tornado.web

from core4.api.container import check_unique
from core4.api.handler import NotFoundHandler
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
    app = tornado.web.Application(
        [rule for _, rule in rules], debug=debug,
        autoreload=False, cookie_secret=context.secrets["cookie"],
        default_handler_class=NotFoundHandler,
        default_handler_args={"context": context})
    app.core4_containers = served
    app.core4_context = context
    return app


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
