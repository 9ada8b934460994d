"""Loggers of core4 objects and jobs.

Every logger is a child of the ``core4`` logger; its adapter adds
``qual_name``, ``identifier`` (the job id inside a job), ``hostname`` and
``username`` to each record.
"""

import logging
import os

from core4.base import hostname, username

#: name of the logger every core4 logger is a child of
ROOT = "core4"

_HOST = {}


def host_and_user():
    """Return ``(hostname, username)`` of this process (cached per pid)."""
    pid = os.getpid()
    if _HOST.get("pid") != pid:
        _HOST.update(pid=pid, value=(hostname(), username()))
    return _HOST["value"]


class CoreLoggerAdapter(logging.LoggerAdapter):
    """Adds qual_name, identifier, hostname and username to every record."""

    def process(self, msg, kwargs):
        extra = dict(self.extra)
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(qual_name, identifier=None):
    """Return the logger adapter of an object named ``qual_name``.

    ``identifier`` (e.g. a job's ``_id``) is stored as a string, ``""`` if
    None.
    """
    logger = logging.getLogger("%s.%s" % (ROOT, qual_name)
                               if not qual_name.startswith(ROOT + ".")
                               else qual_name)
    host, user = host_and_user()
    return CoreLoggerAdapter(logger, {
        "qual_name": qual_name,
        "identifier": "" if identifier is None else str(identifier),
        "hostname": host,
        "username": user,
    })


def fill_defaults(record):
    """Give a record that does not come from an adapter the core4 fields."""
    if not getattr(record, "qual_name", None):
        record.qual_name = record.name
    if getattr(record, "identifier", None) is None:
        record.identifier = ""
    if not getattr(record, "hostname", None) or not getattr(
            record, "username", None):
        record.hostname, record.username = host_and_user()
    return record


class Defaults(logging.Filter):
    """Fills the core4 fields of records that do not come from an adapter."""

    def filter(self, record):
        fill_defaults(record)
        return True
