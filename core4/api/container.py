"""CoreApiContainer: a set of request handlers served under one root.

::

    class MyApi(CoreApiContainer):
        root = "/mypro/api"          # default: /<project>
        rules = [
            ("/hello", HelloHandler),
            (r"/item/([0-9a-f]{24})", ItemHandler, {"kind": "item"}),
        ]

``enabled`` and ``root`` can be configured per container, in the project's
configuration at the container's qualified name (``mypro: api: MyApi:
root: /x``) or in ``api.containers`` (``{"mypro.api.MyApi": {"enabled":
false}}``).

``coco --application`` serves core4's containers itself and each installed
project's containers from a process running in the project's own ``.venv``
(:mod:`core4.api.child`), behind its proxy.
"""

import re

from core4.config import class_config
from core4.error import Core4UserError


class CoreApiContainer:
    """Base class of API containers; subclasses set ``rules``."""

    enabled = True
    root = None
    rules = []

    @classmethod
    def qual_name(cls):
        """Return ``module.Class`` of the container."""
        return "%s.%s" % (cls.__module__, cls.__qualname__)

    @classmethod
    def project(cls):
        """Return the project (first part of the module name)."""
        return cls.__module__.split(".", 1)[0]

    @classmethod
    def settings(cls, config):
        """Return ``(enabled, root)`` after configuration."""
        enabled, root = cls.enabled, cls.root
        if root is None:
            root = "/" + cls.project()
        for node in (class_config(config, cls.qual_name()),
                     (config.api.containers or {}).get(cls.qual_name())):
            if node:
                enabled = node.get("enabled", enabled)
                root = node.get("root", root)
        if not isinstance(enabled, bool):
            raise Core4UserError("%s: enabled must be true or false" %
                                 cls.qual_name())
        if not isinstance(root, str) or (root and (
                not root.startswith("/") or root.endswith("/"))):
            raise Core4UserError("%s: root %r must start and must not end "
                                 "with /" % (cls.qual_name(), root))
        return enabled, root

    @classmethod
    def routes(cls, config):
        """Return ``[(pattern, handler, kwargs)]`` with the root applied;
        refuse malformed and duplicate rules."""
        _, root = cls.settings(config)
        result, seen = [], {}
        for rule in cls.rules:
            if not isinstance(rule, (tuple, list)) or len(rule) not in (2, 3):
                raise Core4UserError("%s: rule %r is not (pattern, handler"
                                     "[, kwargs])" % (cls.qual_name(), rule))
            pattern, handler = rule[0], rule[1]
            kwargs = dict(rule[2]) if len(rule) == 3 else {}
            if not isinstance(pattern, str) or not pattern.startswith("/"):
                raise Core4UserError("%s: pattern %r must start with /" % (
                    cls.qual_name(), pattern))
            try:
                re.compile(pattern)
            except re.error as exc:
                raise Core4UserError("%s: pattern %r: %s" % (
                    cls.qual_name(), pattern, exc)) from None
            full = root + pattern
            if full in seen:
                raise Core4UserError("%s: route %s is declared twice" % (
                    cls.qual_name(), full))
            seen[full] = handler
            result.append((full, handler, kwargs))
        return result


def check_unique(containers, config):
    """Refuse containers that share a root or a route (pass the enabled
    ones: a disabled container claims nothing)."""
    roots, routes = {}, {}
    for container in containers:
        _, root = container.settings(config)
        if root in roots:
            raise Core4UserError("containers %s and %s both use root %r" % (
                roots[root], container.qual_name(), root or "/"))
        roots[root] = container.qual_name()
        for pattern, _, _ in container.routes(config):
            if pattern in routes:
                raise Core4UserError("route %s of %s is also a route of %s"
                                     % (pattern, container.qual_name(),
                                        routes[pattern]))
            routes[pattern] = container.qual_name()
