"""Logging for core4 objects and jobs.

Every logger is a child of ``core4`` and its records carry ``qual_name``,
``identifier`` (the job id inside a job), ``hostname`` and ``username``.
:func:`setup_logging` attaches the handlers the configuration asks for.
"""

import logging
import sys

from core4.base import hostname, username

ROOT = "core4"
_HANDLER_TAG = "_core4_handler"


class CoreLoggerAdapter(logging.LoggerAdapter):
    """Adds qual_name, identifier, hostname and username to every record."""

    def process(self, msg, kwargs):
        extra = dict(self.extra)
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(qual_name, identifier=None):
    """Return the logger adapter of an object named ``qual_name``."""
    logger = logging.getLogger("%s.%s" % (ROOT, qual_name)
                               if not qual_name.startswith(ROOT + ".")
                               else qual_name)
    return CoreLoggerAdapter(logger, {
        "qual_name": qual_name,
        "identifier": "" if identifier is None else str(identifier),
        "hostname": hostname(),
        "username": username(),
    })


class _Defaults(logging.Filter):
    """Fills the core4 fields of records that do not come from an adapter."""

    def filter(self, record):
        for key in ("qual_name", "identifier"):
            if not hasattr(record, key):
                setattr(record, key, record.name if key == "qual_name" else "")
        return True


def setup_logging(config):
    """Attach stderr/stdout handlers per ``config.logging`` (idempotent)."""
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_TAG, 0)]:
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False
    formatter = logging.Formatter(config.logging.format)
    for key, stream in (("stderr", sys.stderr), ("stdout", sys.stdout)):
        level = config.logging.get(key)
        if level:
            handler = logging.StreamHandler(stream)
            handler.setLevel(level)
            handler.setFormatter(formatter)
            handler.addFilter(_Defaults())
            setattr(handler, _HANDLER_TAG, True)
            root.addHandler(handler)
    return root
