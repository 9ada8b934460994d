"""Login tokens: JSON Web Tokens signed with the stored secret.

A token names its user (``sub``) and carries the user's stamp, its
``token_version`` (``ver``): a random value made anew when the user is
created, renamed or deactivated and when its password changes (see
:mod:`core4.api.role`). So a token is valid for exactly one user: it ends
with the user's deletion, rename, deactivation or password change, and a
new user of the same name never inherits it.

A token is valid for ``api.token.expiration`` seconds. The server refuses
a token made for longer (``exp`` - ``iat`` beyond that, e.g. signed
elsewhere with a longer lifetime) or issued in the future.
"""

import time

import jwt

#: seconds of clock difference tolerated between app servers
LEEWAY = 60


def lifetime(config):
    """Seconds a token is valid, and the most the server accepts."""
    return int(config.api.token.expiration)


def create_token(user, secret, config):
    """Return ``(token, expires_at)`` for the user document ``user``."""
    at = int(time.time())
    expires = at + lifetime(config)
    payload = {"sub": user["name"], "iat": at, "exp": expires,
               "ver": user.get("token_version", 0)}
    token = jwt.encode(payload, secret, algorithm=config.api.token.algorithm)
    return token, expires


def decode_token(token, secret, config):
    """Return the payload of a valid token, else None (expired, tampered,
    malformed, signed with another secret or algorithm, made for longer
    than the server's token lifetime or issued in the future)."""
    try:
        payload = jwt.decode(token, secret,
                             algorithms=[config.api.token.algorithm],
                             options={"require": ["sub", "iat", "exp"]})
    except jwt.PyJWTError:
        return None
    if not isinstance(payload.get("sub"), str):
        return None
    issued, expires = payload["iat"], payload["exp"]
    if not all(isinstance(value, (int, float)) and not isinstance(
            value, bool) for value in (issued, expires)):
        return None
    if expires - issued > lifetime(config):
        return None
    if issued > time.time() + LEEWAY:
        return None
    return payload


def needs_refresh(payload, config):
    """True if a valid token is old enough to be replaced."""
    return time.time() - payload["iat"] >= int(config.api.token.refresh)
