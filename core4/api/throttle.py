"""Login throttling, and what a request says about its client.

Failed logins (a wrong password at ``POST /login``, with HTTP Basic or at
``PUT /profile``; a login cookie with a forged signature) are counted per
*(user, client address)* and, more loosely, per *client address*
(``api.throttle``). From the ``attempts``-th failure of a user at one
address on (``address_attempts`` of any users at one address), that key
is locked for ``lock`` seconds, doubled with each further failure up to
``max_lock``: a login attempt for a locked key is refused with 429 and
``Retry-After`` before its password is checked. Failed ``POST /login``
answers are also delayed a little more with each failure. A lock is keyed
on the address, so an attacker elsewhere cannot lock a user out; a
success ends the lock of its (user, address). Counts are forgotten
``window`` seconds after the last failure and the end of the lock.

The state lives in the memory of each app server process, bounded by
``max_entries`` keys (the least recently seen are forgotten first): fast,
no database round trip per Basic request. Behind several app servers an
attacker gets each server's attempts, and a restart forgets the counts.

The client address is the socket's peer, unless the peer is a trusted
proxy (``api.trusted_proxies``, addresses or networks): then the proxy's
``X-Forwarded-For`` (the last address that is no trusted proxy) or
``X-Real-Ip``. Likewise a request counts as TLS when its connection is, or
when a trusted proxy says ``X-Forwarded-Proto: https``. A project's child
server (:mod:`core4.api.child`) trusts the app server in front of it on
loopback.
"""

import collections
import ipaddress
import logging
import math
import socket
import sys
import threading
import time
import weakref

import tornado.iostream

log = logging.getLogger("core4.api.auth")

#: the proxy of a project's child server (the app server)
LOOPBACK = ("127.0.0.0/8", "::1/128")


# the client ------------------------------------------------------------------

def _networks(values):
    networks = []
    for value in values or ():
        try:
            networks.append(ipaddress.ip_network(str(value).strip(),
                                                 strict=False))
        except ValueError:
            log.warning("api.trusted_proxies: %r is no address or network "
                        "(ignored)", value)
    return tuple(networks)


_TRUSTED = {}


def trusted_networks(config):
    """The networks of ``api.trusted_proxies`` (plus loopback in a
    project's child server)."""
    values = tuple(config.api.get("trusted_proxies") or ())
    if in_child_server():
        values += LOOPBACK
    found = _TRUSTED.get(values)
    if found is None:
        found = _TRUSTED[values] = _networks(values)
    return found


def in_child_server():
    """True in a project's child server (``python -m core4.api.child``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "core4.api.child"


def _ip(value):
    try:
        return ipaddress.ip_address(value.strip())
    except (ValueError, AttributeError):
        return None


def _is_trusted(config, address):
    ip = _ip(address)
    return ip is not None and any(ip in net for net in
                                  trusted_networks(config))


def peer_address(handler):
    """The address of the socket the request came in on (tornado's
    ``remote_ip`` believes any client's ``X-Forwarded-For``)."""
    context = getattr(handler.request.connection, "context", None)
    address = getattr(context, "address", None)
    if getattr(context, "address_family", None) in (
            socket.AF_INET, socket.AF_INET6) and address:
        return address[0]
    if context is not None:
        return getattr(context, "_orig_remote_ip", None) or "0.0.0.0"
    return handler.request.remote_ip or "0.0.0.0"


def from_trusted_proxy(handler):
    """True if the request's peer is a trusted proxy."""
    return _is_trusted(handler.context.config, peer_address(handler))


def client_address(handler):
    """The client's address: the peer, or what a trusted proxy says."""
    peer = peer_address(handler)
    config = handler.context.config
    if not _is_trusted(config, peer):
        return peer
    headers = handler.request.headers
    chain = [part.strip() for part in headers.get(
        "X-Forwarded-For", "").split(",") if _ip(part)]
    for candidate in reversed(chain):
        if not _is_trusted(config, candidate):
            return candidate
    real = headers.get("X-Real-Ip", "")
    if _ip(real):
        return real.strip()
    return chain[0] if chain else peer


def is_tls(handler):
    """True if the client talks TLS: the connection itself, or a trusted
    proxy's ``X-Forwarded-Proto`` (or ``X-Scheme``) says https."""
    connection = handler.request.connection
    if isinstance(getattr(connection, "stream", None),
                  tornado.iostream.SSLIOStream):
        return True
    if not from_trusted_proxy(handler):
        return False
    headers = handler.request.headers
    proto = headers.get("X-Forwarded-Proto") or headers.get("X-Scheme") or ""
    return proto.split(",")[-1].strip().lower() == "https"


# the throttle ----------------------------------------------------------------

class Refusal:
    """A login attempt refused for a lock: ``seconds`` left, the locked
    ``user`` (None: the whole address) and ``address``."""

    def __init__(self, seconds, user, address):
        self.seconds = seconds
        self.user = user
        self.address = address

    @property
    def message(self):
        """The one-line message of the 429."""
        return "too many failed logins %sfrom %s: try again in %d s" % (
            "for %s " % self.user if self.user is not None else "",
            self.address, self.seconds)


class _Record:
    __slots__ = ("failures", "until", "last")

    def __init__(self):
        self.failures = 0
        self.until = 0.0
        self.last = 0.0


class Throttle:
    """Failed logins per (user, address) and per address, in memory (see
    the module); thread-safe (logins are checked in the thread pool)."""

    def __init__(self, settings, clock=time.monotonic):
        self.enabled = bool(settings.get("enabled", True))
        self.attempts = max(1, int(settings.get("attempts", 5)))
        self.address_attempts = max(1, int(settings.get(
            "address_attempts", 100)))
        self.lock = max(0.0, float(settings.get("lock", 30)))
        self.max_lock = max(self.lock, float(settings.get("max_lock", 900)))
        self.window = max(0.0, float(settings.get("window", 900)))
        self.delay = max(0.0, float(settings.get("delay", 0.2)))
        self.max_entries = max(1, int(settings.get("max_entries", 10000)))
        self.clock = clock
        self._records = collections.OrderedDict()
        self._mutex = threading.Lock()

    def _keys(self, user, address):
        keys = [("address", None, address)]
        if user is not None:
            keys.insert(0, ("user", user, address))
        return keys

    def _limit(self, key):
        return self.attempts if key[0] == "user" else self.address_attempts

    def _get(self, key, now):
        record = self._records.get(key)
        if record is None:
            return None
        if now >= max(record.until, record.last + self.window):
            del self._records[key]
            return None
        self._records.move_to_end(key)
        return record

    def check(self, user, address):
        """Return the :class:`Refusal` of a login of ``user`` (None: only
        the address) from ``address`` while locked, else None."""
        if not self.enabled:
            return None
        with self._mutex:
            now = self.clock()
            for key in self._keys(user, address):
                record = self._get(key, now)
                if record is not None and record.until > now:
                    return Refusal(max(1, math.ceil(record.until - now)),
                                   key[1], address)
        return None

    def failed(self, user, address):
        """Count a failed login; return the :class:`Refusal` of each lock
        it starts (or renews)."""
        if not self.enabled:
            return []
        locks = []
        with self._mutex:
            now = self.clock()
            for key in self._keys(user, address):
                record = self._get(key, now)
                if record is None:
                    record = self._records[key] = _Record()
                record.failures += 1
                record.last = now
                over = record.failures - self._limit(key)
                if over >= 0:
                    seconds = min(self.max_lock,
                                  self.lock * 2 ** min(over, 64))
                    record.until = now + seconds
                    locks.append(Refusal(max(1, math.ceil(seconds)), key[1],
                                         address))
            while len(self._records) > self.max_entries:
                self._records.popitem(last=False)
        return locks

    def failures(self, user, address):
        """The failures counted for ``user`` at ``address``."""
        with self._mutex:
            record = self._get(("user", user, address), self.clock())
            return record.failures if record is not None else 0

    def succeeded(self, user, address):
        """A login of ``user`` from ``address`` succeeded: forget its
        failures (those of the address stay)."""
        with self._mutex:
            self._records.pop(("user", user, address), None)

    def delay_after(self, user, address):
        """Seconds to delay the answer of a failed login."""
        return self.delay * min(self.failures(user, address), self.attempts)

    def __len__(self):
        return len(self._records)


_THROTTLES = weakref.WeakKeyDictionary()
_CREATE = threading.Lock()


def throttle_of(context):
    """The :class:`Throttle` of the app server of ``context``."""
    found = _THROTTLES.get(context)
    if found is None:
        with _CREATE:
            found = _THROTTLES.get(context)
            if found is None:
                found = _THROTTLES[context] = Throttle(
                    context.config.api.get("throttle") or {})
    return found


# reports ---------------------------------------------------------------------

def _emit(context, name, data, author):
    from core4.queue import events
    events.emit(context.system, events.event_document(
        name, data, channel="auth", author=author))


def report_login(context, user, address, via):
    """Log a successful login in one line and emit event ``login``
    (blocking: call it in the thread pool)."""
    log.info("login of %s from %s (%s)", user, address, via)
    _emit(context, "login", {"user": user, "address": address, "via": via},
          user)


def report_failure(context, user, address, via):
    """Count a failed login of ``user`` (None: unknown, e.g. a forged
    cookie) from ``address``; log each lock it starts in one line and emit
    event ``login_locked`` (blocking: call it in the thread pool)."""
    for lock in throttle_of(context).failed(user, address):
        log.warning("login locked for %d s: %s from %s (%s)", lock.seconds,
                    "user %s" % lock.user if lock.user is not None
                    else "every user", address, via)
        _emit(context, "login_locked", {
            "user": lock.user, "address": address, "via": via,
            "seconds": lock.seconds}, lock.user)
