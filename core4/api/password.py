"""Password hashes (argon2id): a clear password is never stored or logged.

Checking a password costs an argon2 hash (64 MiB, three passes): an app
server runs those checks in a small pool of their own, with a bounded
queue (:class:`Checker`), never in the pool that serves database calls.
"""

import asyncio
import concurrent.futures
import functools
import secrets
import threading

import argon2
import argon2.exceptions

from core4.error import Core4UserError

MIN_LENGTH = 8
MAX_LENGTH = 1024
_HASHER = argon2.PasswordHasher()
#: threads of the password pool, and checks that may wait for one
#: (``api.password_checks``: ``threads``, ``queue``)
THREADS = 2
QUEUE = 2


class Hashed(str):
    """A password hashed already (e.g. by the :class:`Checker`): stored
    as it is, not hashed again."""


class Busy(Core4UserError):
    """Every thread of the password pool is busy and its queue is full."""

    status = 429
    headers = {"Retry-After": "1"}

    def __init__(self):
        super().__init__("too many password checks at once: try again in "
                         "a second")


def check_strength(password):
    """Raise a clear error if ``password`` is not acceptable."""
    if not isinstance(password, str):
        raise Core4UserError("password must be a string")
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise Core4UserError("password must have %d to %d characters" % (
            MIN_LENGTH, MAX_LENGTH))


def hash_password(password):
    """Return the argon2 hash of an acceptable ``password`` (a
    :class:`Hashed` one as it is)."""
    if isinstance(password, Hashed):
        return str(password)
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


def verify_or_pretend(hashed, password):
    """True if ``password`` matches ``hashed``; without a ``hashed``
    (an unknown user) check against :func:`dummy_hash` and answer False,
    so that both cost the same time."""
    if not hashed:
        verify_password(dummy_hash(), password)
        return False
    return verify_password(hashed, password)


@functools.lru_cache(maxsize=1)
def dummy_hash():
    """A hash of a random password, checked against when a user name is
    unknown (so both cost the same time)."""
    return _HASHER.hash(secrets.token_hex(16))


class Checker:
    """The password pool of one app server: ``threads`` threads and at
    most ``queue`` checks waiting for one. A check beyond raises
    :class:`Busy` (429) at once, without hashing anything."""

    def __init__(self, threads=THREADS, queue=QUEUE):
        self.threads = max(1, int(threads))
        self.capacity = self.threads + max(0, int(queue))
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix="core4-password")

    @classmethod
    def of_config(cls, config):
        """The checker of ``api.password_checks`` (defaults
        :data:`THREADS` and :data:`QUEUE`)."""
        settings = config.api.get("password_checks") or {}
        return cls(settings.get("threads", THREADS),
                   settings.get("queue", QUEUE))

    def admit(self):
        """Take a place in the pool, or raise :class:`Busy`; the place is
        given back by :meth:`submit`'s future (or :meth:`release`)."""
        if not self._slots.acquire(blocking=False):
            raise Busy()

    def release(self):
        """Give back a place taken by :meth:`admit` and not used."""
        self._slots.release()

    def submit(self, function, *args, admitted=False):
        """Run ``function(*args)`` in the pool; return its future (raise
        :class:`Busy` when full, unless ``admitted`` already)."""
        if not admitted:
            self.admit()
        try:
            future = self._executor.submit(function, *args)
        except BaseException:
            self.release()
            raise
        future.add_done_callback(lambda _: self.release())
        return future

    def verify(self, hashed, password, admitted=False):
        """Blocking :func:`verify_or_pretend` in the pool (for a thread
        that is not the event loop)."""
        return self.submit(verify_or_pretend, hashed, password,
                           admitted=admitted).result()

    async def verify_async(self, hashed, password):
        """:func:`verify_or_pretend` in the pool, awaited."""
        return await asyncio.wrap_future(self.submit(
            verify_or_pretend, hashed, password))

    async def hash_async(self, password):
        """The :class:`Hashed` of an acceptable ``password``, made in the
        pool."""
        check_strength(password)
        return Hashed(await asyncio.wrap_future(self.submit(
            hash_password, password)))

    def close(self):
        """Stop the pool's threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
