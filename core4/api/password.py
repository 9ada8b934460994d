"""Password hashes (argon2id): a clear password is never stored or logged."""

import functools
import secrets

import argon2
import argon2.exceptions

from core4.error import Core4UserError

MIN_LENGTH = 8
MAX_LENGTH = 1024
_HASHER = argon2.PasswordHasher()


def check_strength(password):
    """Raise a clear error if ``password`` is not acceptable."""
    if not isinstance(password, str):
        raise Core4UserError("password must be a string")
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise Core4UserError("password must have %d to %d characters" % (
            MIN_LENGTH, MAX_LENGTH))


def hash_password(password):
    """Return the argon2 hash of an acceptable ``password``."""
    check_strength(password)
    return _HASHER.hash(password)


def verify_password(hashed, password):
    """True if ``password`` matches ``hashed``."""
    if not hashed or not isinstance(password, str):
        return False
    try:
        return _HASHER.verify(hashed, password)
    except (argon2.exceptions.VerificationError,
            argon2.exceptions.InvalidHashError):
        return False


@functools.lru_cache(maxsize=1)
def dummy_hash():
    """A hash of a random password, checked against when a user name is
    unknown (so both cost the same time)."""
    return _HASHER.hash(secrets.token_hex(16))
