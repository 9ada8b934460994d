"""Login tokens: JSON Web Tokens signed with the stored secret.

A token names its user and carries the user's ``token_version``: changing
the password increments it and so invalidates every token issued before.
"""

import time

import jwt


def create_token(user, secret, config):
    """Return ``(token, expires_at)`` for the user document ``user``."""
    at = int(time.time())
    expires = at + int(config.api.token.expiration)
    payload = {"sub": user["name"], "iat": at, "exp": expires,
               "ver": user.get("token_version", 0)}
    token = jwt.encode(payload, secret, algorithm=config.api.token.algorithm)
    return token, expires


def decode_token(token, secret, config):
    """Return the payload of a valid token, else None (expired, tampered,
    malformed or signed with another secret or algorithm)."""
    try:
        payload = jwt.decode(token, secret,
                             algorithms=[config.api.token.algorithm],
                             options={"require": ["sub", "iat", "exp"]})
    except jwt.PyJWTError:
        return None
    if not isinstance(payload.get("sub"), str):
        return None
    return payload


def needs_refresh(payload, config):
    """True if a valid token is old enough to be replaced."""
    return time.time() - payload["iat"] >= int(config.api.token.refresh)
