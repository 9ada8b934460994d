"""MongoDB clients and collections, and one-line errors for unreachable servers.

A client is cached per url *and process id*: a forked child never uses its
parent's client (pymongo clients are not fork-safe), it opens its own.
"""

import contextlib
import os
import time
import urllib.parse

import pymongo
import pymongo.errors

from core4.error import (Core4ConfigurationError, CoreDatabaseError,
                         CoreDatabaseUnreachable)
from core4.mongo import embedded

_CLIENTS = {}
#: the user of a configured ``mongo_url`` that names none (with
#: :data:`PASSWORD_FILE_ENV`), e.g. ``core4``
USER_ENV = "CORE4_MONGO_USER"
#: a file holding that user's password (e.g. a Docker secret)
PASSWORD_FILE_ENV = "CORE4_MONGO_PASSWORD_FILE"


def embedded_data_dir(config):
    """Return the data directory of the embedded server for ``config``."""
    return os.path.join(config.folder.home, "mongo")


def resolve_url(url, config):
    """Return ``url``, or the url of the embedded server if ``url`` is None.

    A configured url never starts anything; without one the embedded
    NX-27017 server under ``folder.home`` is started on demand.
    """
    if url:
        return url
    return embedded.ensure_server(embedded_data_dir(config))


def revive(config, log=None):
    """After a connection error: if the system collections live on the
    embedded server and its process is gone, start it again, on its own
    port, so that every client reconnects by itself. The server's lock
    makes sure only one process starts it. A configured ``mongo_url`` is
    never started, and a live server that does not answer (stalled) is
    never killed. Never raises; returns True if the server runs."""
    if config.sys.queue.url:
        return False
    try:
        embedded.ensure_server(embedded_data_dir(config), kill_hung=False)
        return True
    except CoreDatabaseUnreachable as exc:
        if log is not None:
            log.debug("embedded server not started: %s", exc)
        return False


def environment_credentials(url):
    """Return ``{"username", "password"}`` for ``url`` from
    ``CORE4_MONGO_USER`` and the file named by ``CORE4_MONGO_PASSWORD_FILE``
    if both are set and ``url`` names no user; else ``{}``. The password
    stays out of the url, the configuration and the command line."""
    user = os.environ.get(USER_ENV)
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not (user and path) or "@" in urllib.parse.urlsplit(url).netloc:
        return {}
    try:
        with open(path) as handle:
            password = handle.read().strip("\r\n")
    except OSError as exc:
        raise Core4ConfigurationError("%s: cannot read %s: %s" % (
            PASSWORD_FILE_ENV, path, exc.strerror)) from None
    return {"username": user, "password": password}


def get_client(url, config):
    """Return this process' :class:`pymongo.MongoClient` for ``url`` (with
    the credentials of :func:`environment_credentials`, if any)."""
    key = (url, os.getpid())
    client = _CLIENTS.get(key)
    if client is None:
        for stale in [k for k in _CLIENTS if k[1] != os.getpid()]:
            # inherited over fork: never close (it belongs to the parent)
            del _CLIENTS[stale]
        client = pymongo.MongoClient(
            url, tz_aware=True,
            serverSelectionTimeoutMS=config.mongo.server_timeout,
            connectTimeoutMS=config.mongo.connect_timeout, connect=False,
            **environment_credentials(url))
        _CLIENTS[key] = client
    return client


def close_clients():
    """Close every client this process opened (e.g. before exiting)."""
    for key in [k for k in _CLIENTS if k[1] == os.getpid()]:
        _CLIENTS.pop(key).close()


def collection(connect, config):
    """Return the pymongo collection named by a ``!connect`` config value."""
    url = resolve_url(connect.url, config)
    return get_client(url, config)[connect.database][connect.collection]


@contextlib.contextmanager
def translate_errors(what="MongoDB"):
    """Turn pymongo connection errors into one-line core4 errors."""
    try:
        yield
    except pymongo.errors.ServerSelectionTimeoutError as exc:
        raise CoreDatabaseUnreachable("cannot reach %s: %s" % (
            what, str(exc).split(", Timeout:")[0])) from None
    except pymongo.errors.ConfigurationError as exc:
        raise CoreDatabaseUnreachable(
            "invalid MongoDB url for %s: %s" % (what, exc)) from None
    except pymongo.errors.AutoReconnect as exc:
        raise CoreDatabaseUnreachable(
            "lost connection to %s: %s" % (what, exc)) from None
    except pymongo.errors.OperationFailure as exc:
        raise CoreDatabaseError("%s failed: %s" % (what, exc)) from None


class SystemCollections:
    """The ``sys`` collections of one configuration, opened lazily.

    ``SystemCollections(config).queue`` is the pymongo collection configured
    as ``sys.queue`` (by default ``sys_queue`` in ``mongo_database``).
    """

    def __init__(self, config):
        self.config = config
        self._opened = {}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._opened:
            try:
                connect = self.config.sys[name]
            except KeyError:
                raise AttributeError("no sys collection %r" % name) from None
            self._opened[name] = collection(connect, self.config)
        return self._opened[name]

    def database(self):
        """Return the database of ``sys.queue`` (where core4 keeps its state)."""
        return self.queue.database

    def ping(self):
        """Raise :class:`CoreDatabaseUnreachable` unless the server answers."""
        with translate_errors(self.describe()):
            self.database().command("ping")

    def describe(self):
        """Return ``url/database`` of the system collections, for messages."""
        connect = self.config.sys.queue
        url = connect.url or "embedded server (%s)" % embedded_data_dir(
            self.config)
        return "%s database %s" % (url, connect.database)


#: errors after which an operation may succeed when tried again
TRANSIENT = (pymongo.errors.ConnectionFailure,)


def short_error(exc):
    """The first part of a pymongo connection error's text: without the
    configured timeouts and the topology description that follow it."""
    text = str(exc)
    for tail in (" (configured timeouts", ", Timeout:"):
        text = text.split(tail)[0]
    return text


def retrying(call, *args, timeout=3600.0, **kwargs):
    """Call ``call(*args, **kwargs)``, retrying with backoff while the
    server is unreachable, for up to ``timeout`` seconds.

    Used for writes that must not be lost in a database outage, such as a
    job's outcome.
    """
    delay = 0.1
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(*args, **kwargs)
        except TRANSIENT:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
