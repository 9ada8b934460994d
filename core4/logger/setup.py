"""Attach the handlers ``config.logging`` asks for to the ``core4`` logger."""

import logging
import os
import sys
import threading
import time

from core4.error import Core4ConfigurationError
from core4.logger.adapter import ROOT, Defaults
from core4.logger.mongo import MongoHandler

_TAG = "_core4_handler"
_LOCK = threading.RLock()


def parse_level(value, key="level"):
    """Return the number of a level given by name or number (None stays)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Core4ConfigurationError("%s: bad level %r" % (key, value))
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    level = logging.getLevelNamesMapping().get(text)
    if level is None:
        raise Core4ConfigurationError("%s: unknown level %r" % (key, value))
    return level


class ConsoleHandler(logging.StreamHandler):
    """A handler writing to the *current* ``sys.stderr``/``sys.stdout``
    (looked up at each record, so redirections and test captures work)."""

    def __init__(self, name):
        self._sysname = name
        super().__init__(getattr(sys, name))

    @property
    def stream(self):
        return getattr(sys, self._sysname)

    @stream.setter
    def stream(self, value):
        pass  # always the current sys stream


def _mongo_settings(config):
    cfg = config.logging
    level = parse_level(cfg.get("mongodb"), "logging.mongodb")
    if level is None:
        return None
    exc = cfg.get("exception") or {}
    return {"level": level, "ttl": cfg.get("mongodb_ttl"),
            "maxsize": cfg.get("mongodb_queue") or 10000,
            "capacity": exc.get("capacity") or 0}


def _mongo_key(config, settings):
    return (repr(config.sys.log), config.DEFAULT.get("mongo_url"),
            str(config.folder.home), config.mongo.server_timeout,
            config.mongo.connect_timeout, tuple(sorted(settings.items())))


def setup_logging(config, console=True, log_file=None):
    """Attach handlers per ``config.logging`` to the ``core4`` logger.

    ``console=False`` attaches no stderr/stdout handler (job processes:
    their records go to ``sys.log`` only). With ``log_file`` the
    ``sys.log`` documents go to that file instead, for the worker to
    forward (see :mod:`core4.logger.forward`). Idempotent: the handlers of an
    earlier call are replaced; the MongoDB handler (and its writer thread)
    is kept if its settings did not change and it belongs to this process
    (a forked child gets its own). Returns the ``core4`` logger.
    """
    with _LOCK:
        root = logging.getLogger(ROOT)
        root.setLevel(logging.DEBUG)
        root.propagate = False
        settings = _mongo_settings(config)
        key = _mongo_key(config, settings) if settings else None
        kept = None
        for handler in [h for h in root.handlers if getattr(h, _TAG, 0)]:
            if (kept is None and isinstance(handler, MongoHandler)
                    and key is not None and handler.key == key
                    and handler.owner == os.getpid()):
                kept = handler
                continue
            root.removeHandler(handler)
            if isinstance(handler, MongoHandler):
                handler.retire()
        if console:
            formatter = logging.Formatter(config.logging.format)
            for name in ("stderr", "stdout"):
                level = parse_level(config.logging.get(name),
                                    "logging." + name)
                if level is None:
                    continue
                handler = ConsoleHandler(name)
                handler.setLevel(level)
                handler.setFormatter(formatter)
                handler.addFilter(Defaults())
                setattr(handler, _TAG, True)
                root.addHandler(handler)
        if settings and log_file:
            from core4.logger.forward import FileHandler
            if kept is not None:
                root.removeHandler(kept)
                kept.retire()
            handler = FileHandler(log_file, level=settings["level"],
                                  capacity=settings["capacity"])
            handler.key = None
            setattr(handler, _TAG, True)
            root.addHandler(handler)
        elif settings and kept is None:
            handler = MongoHandler(config, **settings)
            handler.key = key
            setattr(handler, _TAG, True)
            root.addHandler(handler)
    return root


def mongo_handler():
    """The active :class:`MongoHandler` of this process, or None."""
    for handler in logging.getLogger(ROOT).handlers:
        if isinstance(handler, MongoHandler) and getattr(handler, _TAG, 0):
            return handler
    return None


def retarget_log_file(old, new):
    """Let the log file handler :func:`setup_logging` attached for
    ``old`` write to ``new`` from now on (a spare primed for its job hands
    over its logging, see :mod:`core4.queue.launcher.child`; a file it
    opened already goes on if it was renamed to ``new``, see
    :meth:`~core4.logger.forward.FileHandler.move_to`). False if there is
    none."""
    from core4.logger.forward import FileHandler
    with _LOCK:
        for handler in logging.getLogger(ROOT).handlers:
            if isinstance(handler, FileHandler) and getattr(handler, _TAG, 0) \
                    and handler.path == old:
                handler.move_to(new)
                return True
    return False


def flush_logging(timeout=2.0):
    """Wait up to ``timeout`` seconds until the queued records of this
    process are written to ``sys.log``; return True if all were.

    Call it before ``os._exit`` (which skips the handlers' flush at exit).
    It never raises and never waits longer than ``timeout``. Only the
    handler :func:`setup_logging` attached is waited for: one an earlier
    call replaced finishes in the background.
    """
    deadline = time.monotonic() + timeout
    done = True
    for handler in logging.getLogger(ROOT).handlers:
        if not isinstance(handler, MongoHandler):
            continue
        try:
            left = max(0.0, deadline - time.monotonic())
            done = handler.flush(left) and done
        except Exception:  # noqa: BLE001 - flushing never breaks the caller
            done = False
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    return done
