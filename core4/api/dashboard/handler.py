"""The handlers of the dashboard's shell, its static assets, the session
probe and the database probe.

Assets are read once from the package's ``static/`` folder into memory
(again at every request with ``api.debug``). A request names a file by its
path relative to that folder and is answered only if exactly this path was
found there: nothing outside the folder (``..``, absolute paths, symbolic
links out of it) can ever be served.
"""

import hashlib
import os

from core4.api import role
from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: file extensions served, with their content types
CONTENT_TYPES = {
    ".html": "text/html; charset=UTF-8",
    ".js": "text/javascript; charset=UTF-8",
    ".css": "text/css; charset=UTF-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json; charset=UTF-8",
    ".txt": "text/plain; charset=UTF-8",
}
#: where the page may load from and connect to: only its own origin
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; "
       "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PLACEHOLDER = "{{version}}"


class Assets:
    """The files of ``folder``: ``{relative path: (bytes, content type)}``
    and ``version``, a hash of all of them."""

    def __init__(self, folder=STATIC):
        self.folder = os.path.realpath(folder)
        self.files = {}
        digest = hashlib.sha256()
        for base, dirs, names in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(names):
                kind = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
                if kind is None or name.startswith("."):
                    continue
                path = os.path.join(base, name)
                if not os.path.realpath(path).startswith(
                        self.folder + os.sep):
                    continue  # a link out of the folder
                with open(path, "rb") as handle:
                    data = handle.read()
                relative = os.path.relpath(path, self.folder).replace(
                    os.sep, "/")
                self.files[relative] = (data, kind)
                digest.update(relative.encode() + b"\0" + data + b"\0")
        self.version = digest.hexdigest()[:12]

    def get(self, path):
        """Return ``(bytes, content type)`` of ``path`` or None."""
        return self.files.get(path)

    def page(self):
        """Return the shell ``index.html`` with the asset version."""
        data, _ = self.files["index.html"]
        return data.decode("utf-8").replace(PLACEHOLDER, self.version)


_ASSETS = {}


def assets(reload=False):
    """Return the (cached) :class:`Assets` of the package."""
    if reload or "static" not in _ASSETS:
        _ASSETS["static"] = Assets()
    return _ASSETS["static"]


class DashboardHandler(CoreRequestHandler):
    """Base of the dashboard's handlers: public, not part of the API
    document, with security headers on every answer."""

    public = True
    openapi = False

    def set_default_headers(self):
        """Security headers (errors included)."""
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", CSP)

    def assets(self):
        """The assets (read again at every request in debug mode)."""
        return assets(reload=bool(self.settings.get("debug")))


class StaticMixin:
    """Static answers need no login: skip authentication (no database
    look-up per asset)."""

    def prepare(self):
        """Nothing to check."""


class AppHandler(StaticMixin, DashboardHandler):
    """``GET /``: the single-page app's shell (revalidated at every load;
    tornado answers 304 while it is unchanged)."""

    def get(self):
        """Answer ``index.html``."""
        self.set_header("Content-Type", CONTENT_TYPES[".html"])
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.assets().page())

    head = get


class AssetHandler(StaticMixin, DashboardHandler):
    """``GET /_dashboard/<version>/<path>``: a static asset; cached for a
    year when ``version`` is the current one, else revalidated."""

    def get(self, version, path):
        """Answer the asset or 404."""
        current = self.assets()
        found = current.get(path)
        if found is None or path == "index.html":
            raise ApiError(404, "no asset %s" % path)
        data, kind = found
        self.set_header("Content-Type", kind)
        if version == current.version:
            self.set_header("Cache-Control",
                            "public, max-age=31536000, immutable")
        else:
            self.set_header("Cache-Control", "no-cache")
        self.finish(data)

    head = get


class SessionHandler(DashboardHandler):
    """``GET /_dashboard/session``: the logged-in user (as
    ``GET /core4/api/v1/profile`` answers it) or ``{"user": null}`` - with
    200 either way, so the app can ask before login without an error."""

    def get(self):
        """Answer ``{"user": profile or null}``."""
        self.set_header("Cache-Control", "no-store")
        if self.user is None:
            self.reply({"user": None})
            return
        data = role.public(self.user)
        data["effective_permissions"] = self.permissions.strings
        self.reply({"user": data})


class HealthHandler(StaticMixin, DashboardHandler):
    """``GET /_dashboard/health``: ``{"database": "ok"}`` if the database
    answers a ping, else 503 with one message (as every API request in an
    outage). The dashboard asks it while the database is unavailable, to
    find out when it is back. Needs no login (nothing is read)."""

    async def get(self):
        """Ping the database (bounded like every request, see
        :meth:`~core4.api.handler.CoreRequestHandler.run`)."""
        self.set_header("Cache-Control", "no-store")
        await self.run(self.context.system.database().command, "ping")
        self.reply({"database": "ok"})
