"""Who sends a request: HTTP Basic, a Bearer token (JWT) or the signed
login cookie, tried in this order. Anything else, or anything invalid,
is nobody."""

import base64
import binascii
import time

from core4.api import role, token

COOKIE = "core4_token"


class Login:
    """An authenticated request: the user, its permissions, how it logged
    in and, when its token is due for renewal, a fresh one."""

    def __init__(self, user, permissions, via, fresh_token=None):
        self.user = user
        self.permissions = permissions
        self.via = via
        self.fresh_token = fresh_token


def credentials(handler):
    """Return the credentials the request carries: ``("basic", name,
    password)``, ``("bearer", token)``, ``("cookie", token)`` or None."""
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            text = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ("invalid",)
        name, sep, password = text.partition(":")
        return ("basic", name, password) if sep else ("invalid",)
    if scheme.lower() == "bearer":
        return ("bearer", value.strip())
    if header:
        return ("invalid",)
    cookie = handler.get_signed_cookie(COOKIE, max_age_days=31)
    if cookie:
        return ("cookie", cookie.decode("ascii", errors="replace"))
    return None


def login_with(context, creds):
    """Return the :class:`Login` of ``creds`` or None (blocking: call it in
    the executor)."""
    if creds is None or creds[0] == "invalid":
        return None
    system = context.system
    if creds[0] == "basic":
        user = role.authenticate(system, creds[1], creds[2])
        if user is None:
            return None
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


def set_cookie(handler, value):
    """Store ``value`` (a token) in the signed, http-only login cookie,
    expiring with the token."""
    expires = time.time() + int(handler.context.config.api.token.expiration)
    handler.set_signed_cookie(COOKIE, value, expires=expires, httponly=True,
                              samesite="Strict", path="/",
                              secure=handler.request.protocol == "https")


def clear_cookie(handler):
    """Remove the login cookie."""
    handler.clear_cookie(COOKIE, path="/")
