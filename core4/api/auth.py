"""Who sends a request: HTTP Basic, a Bearer token (JWT) or the signed
login cookie, tried in this order. Anything else, or anything invalid,
is nobody.

HTTP Basic is accepted only where a login is needed (every route that is
not public) and by the handlers that say so (``basic``: ``GET
/login``); elsewhere Basic credentials are ignored without a password
check. Password logins are throttled (:mod:`core4.api.throttle`): while a
user at an address, or the address, is locked, a Basic login answers 429
with ``Retry-After`` without its password being checked. The password is
checked in the app server's password pool
(:class:`~core4.api.password.Checker`): when it is full, 429 at once.

A long-lived response (server-sent events) re-checks its login every
:data:`RECHECK` seconds (:class:`Recheck`) and ends when it no longer
holds.

The cookie is ``HttpOnly``, ``SameSite=Strict`` and, over TLS, ``Secure``.
An unsafe request (POST, PUT, PATCH, DELETE) authenticated by the cookie
must come from the server's own origin: its ``Origin`` (else ``Referer``)
header must name it (or one of ``api.csrf.origins``), else 403. Requests
without either header pass unless ``api.csrf.require_origin`` (browsers
send ``Origin`` with every cross-site POST). Bearer and Basic requests
are not affected: a browser never adds them by itself.
"""

import base64
import binascii
import time
import urllib.parse

from core4.api import role, throttle, token
from core4.api.errors import ApiError

COOKIE = "core4_token"
#: seconds between the re-checks of a long-lived response's login
RECHECK = 3.0
#: methods that change state: with the cookie they need a same origin
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
_PORTS = {"http": 80, "https": 443}


class Login:
    """An authenticated request: the user, its permissions, how it logged
    in and, when its token is due for renewal, a fresh one."""

    def __init__(self, user, permissions, via, fresh_token=None):
        self.user = user
        self.permissions = permissions
        self.via = via
        self.fresh_token = fresh_token


class Credentials(tuple):
    """What :func:`credentials` found (a tuple like ``("basic", name,
    password)``) and the client's ``address``."""

    def __new__(cls, items, address=None):
        self = super().__new__(cls, items)
        self.address = address
        return self


def throttled(refusal):
    """The 429 :class:`ApiError` of a :class:`~core4.api.throttle.Refusal`."""
    return ApiError(429, refusal.message,
                    {"Retry-After": str(refusal.seconds)})


def credentials(handler):
    """Return the credentials the request carries: ``("basic", name,
    password)``, ``("bearer", token)``, ``("cookie", token)``,
    ``("forged",)`` (a cookie with a bad signature), ``("invalid",)`` or
    None, as :class:`Credentials`. An unsafe cross-site request with the
    cookie raises a 403 :class:`ApiError`."""
    address = throttle.client_address(handler)
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        if not accepts_basic(handler):
            return None
        try:
            text = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return Credentials(("invalid",), address)
        name, sep, password = text.partition(":")
        return Credentials(("basic", name, password) if sep
                           else ("invalid",), address)
    if scheme.lower() == "bearer":
        return Credentials(("bearer", value.strip()), address)
    if header:
        return Credentials(("invalid",), address)
    cookie = handler.get_signed_cookie(COOKIE, max_age_days=31)
    if cookie:
        if handler.request.method in UNSAFE:
            check_origin(handler)
        value = cookie.decode("ascii", errors="replace")
        return Credentials(("cookie", value), address)
    if handler.get_cookie(COOKIE):
        # forged, or signed with a former secret: counted, and removed
        clear_cookie(handler)
        return Credentials(("forged",), address)
    return None


def accepts_basic(handler):
    """True if ``handler`` takes HTTP Basic credentials for its request:
    as its ``basic`` attribute says (True, False or the methods that take
    it), else if it needs a login (not ``public``)."""
    basic = getattr(handler, "basic", None)
    if basic is None:
        return not getattr(handler, "public", False)
    if isinstance(basic, (tuple, list, set, frozenset)):
        return handler.request.method in basic
    return bool(basic)


def login_with(context, creds):
    """Return the :class:`Login` of ``creds`` or None (blocking: call it in
    the executor); raise 429 while a Basic login is throttled."""
    if creds is None or creds[0] == "invalid":
        return None
    system = context.system
    address = getattr(creds, "address", None)
    if creds[0] == "forged":
        throttle.report_failure(context, None, address, "cookie")
        return None
    if creds[0] == "basic":
        gate = throttle.throttle_of(context)
        refusal = gate.check(creds[1], address)
        if refusal is not None:
            raise throttled(refusal)
        # waits for the password pool (429 at once when it is full)
        user = role.authenticate(system, creds[1], creds[2],
                                 verify=context.passwords.verify)
        if user is None:
            throttle.report_failure(context, creds[1], address, "basic")
            return None
        gate.succeeded(creds[1], address)
        return Login(user, role.effective_permissions(system, user), "basic")
    payload = token.decode_token(creds[1], context.secrets["jwt"],
                                 context.config)
    if payload is None:
        return None
    user = role.find_user(system, payload["sub"])
    if user is None or user.get("token_version", 0) != payload.get("ver"):
        return None
    fresh = None
    if token.needs_refresh(payload, context.config):
        fresh, _ = token.create_token(user, context.secrets["jwt"],
                                      context.config)
    return Login(user, role.effective_permissions(system, user), creds[0],
                 fresh)


def authenticate(handler):
    """Return the :class:`Login` of ``handler``'s request, or None."""
    return login_with(handler.context, credentials(handler))


# long-lived responses --------------------------------------------------------

def recheck(context, user):
    """Return the :class:`Login` of ``user`` (logged in earlier) as it
    is now, or None if the user was deleted, renamed or deactivated or
    its stamp changed (password changed) meanwhile (blocking: call it in
    the executor)."""
    current = role.find_user(context.system, user["name"])
    if (current is None or current["_id"] != user["_id"]
            or current.get("token_version") != user.get("token_version")):
        return None
    return Login(current, role.effective_permissions(context.system,
                                                     current), "recheck")


def token_expiry(handler):
    """The ``exp`` of the request's token (Bearer or cookie), or None
    (HTTP Basic, or no valid token)."""
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        value = value.strip()
    elif header:
        return None
    else:
        cookie = handler.get_signed_cookie(COOKIE, max_age_days=31)
        if not cookie:
            return None
        value = cookie.decode("ascii", errors="replace")
    payload = token.decode_token(value, handler.context.secrets["jwt"],
                                 handler.context.config)
    return payload["exp"] if payload else None


class Recheck:
    """The login of a long-lived response, checked again every
    ``interval`` seconds: :meth:`revoked` answers why it no longer holds
    (the user was deleted, renamed or deactivated, its password changed,
    its token expired), else None; it renews the handler's ``user`` and
    ``permissions``, which the caller checks further (e.g. permission to
    read a job)."""

    def __init__(self, handler, interval=RECHECK):
        self.handler = handler
        self.interval = float(interval)
        self.expires = token_expiry(handler)
        self.checked = time.monotonic()

    async def revoked(self):
        """None while the login holds (checked at most every
        ``interval`` seconds), else the one-line reason."""
        handler = self.handler
        if time.monotonic() - self.checked < self.interval:
            return None
        name = handler.user["name"]
        if self.expires is not None and time.time() >= self.expires:
            return "the login token of %s expired" % name
        login = await handler.run(recheck, handler.context, handler.user)
        self.checked = time.monotonic()
        if login is None:
            return "the login of %s is no longer valid" % name
        handler.user, handler.permissions = login.user, login.permissions
        return None


# cross-site requests ---------------------------------------------------------

def _origin(text, scheme=None):
    """Return ``(scheme, host, port)`` of an origin or URL (``scheme``:
    of a bare ``host[:port]``), or None."""
    try:
        parts = urllib.parse.urlsplit(text if scheme is None
                                      else "%s://%s" % (scheme, text))
        port = parts.port
    except ValueError:
        return None
    found = (parts.scheme or "").lower()
    if found not in _PORTS or not parts.hostname:
        return None
    return found, parts.hostname.lower(), port or _PORTS[found]


def own_origins(handler):
    """The origins the request's server answers as: its ``Host`` (and a
    trusted proxy's ``X-Forwarded-Host``) with the request's scheme, plus
    ``api.csrf.origins``."""
    request = handler.request
    hosts = [request.host]
    schemes = {"https" if throttle.is_tls(handler) else "http",
               request.protocol}
    if throttle.from_trusted_proxy(handler):
        forwarded = request.headers.get("X-Forwarded-Host", "")
        hosts.extend(part.strip() for part in forwarded.split(",")
                     if part.strip())
    found = {_origin(host, scheme) for host in hosts for scheme in schemes}
    csrf = handler.context.config.api.get("csrf") or {}
    found.update(_origin(value) for value in csrf.get("origins") or ())
    found.discard(None)
    return found


def check_origin(handler):
    """Refuse (403) an unsafe request with the login cookie whose
    ``Origin`` (else ``Referer``) is not the server's own origin."""
    request = handler.request
    kind, value = "Origin", request.headers.get("Origin")
    if value is None:
        kind, value = "Referer", request.headers.get("Referer")
    if value is None:
        csrf = handler.context.config.api.get("csrf") or {}
        if csrf.get("require_origin"):
            raise ApiError(403, "%s %s with the login cookie needs an Origin "
                           "or Referer header (cross-site request "
                           "protection)" % (request.method, request.path))
        return
    if _origin(value.strip()) in own_origins(handler):
        return
    shown = value.strip()
    if kind == "Referer":
        shown = shown.split("?", 1)[0]
    raise ApiError(403, "cross-site request refused: %s %s with the login "
                   "cookie from %s %s, not this server's origin" % (
                       request.method, request.path, kind,
                       (shown[:100] + "...") if len(shown) > 100 else shown))


# the cookie -----------------------------------------------------------------

def set_cookie(handler, value):
    """Store ``value`` (a token) in the signed, http-only login cookie,
    expiring with the token; ``Secure`` over TLS (see
    :func:`core4.api.throttle.is_tls`)."""
    expires = time.time() + int(handler.context.config.api.token.expiration)
    handler.set_signed_cookie(COOKIE, value, expires=expires, httponly=True,
                              samesite="Strict", path="/",
                              secure=throttle.is_tls(handler))


def clear_cookie(handler):
    """Remove the login cookie."""
    handler.clear_cookie(COOKIE, path="/")
