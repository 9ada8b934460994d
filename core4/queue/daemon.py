"""Daemon registry in ``sys_worker``: workers, schedulers and app servers
register there with kind, pid, phase and heartbeat."""

import os

import psutil
import pymongo.errors

from core4.base import hostname
from core4.error import Core4UserError
from core4.mongo import now, seconds, to_datetime

#: ids of control documents in sys_worker (not daemons)
CONTROL_IDS = ("__halt__", "__maintenance__", "__schema__")


def alive_daemons(system, config, kind=None):
    """Return the registered daemons whose heartbeat is recent enough."""
    query = {"kind": {"$exists": True},
             "heartbeat": {"$gte": now() - seconds(
                 config.daemon.alive_timeout)},
             "phase": {"$ne": "exit"}}
    if kind:
        query["kind"] = kind
    return [doc for doc in system.worker.find(query).sort("_id", 1)
            if doc["_id"] not in CONTROL_IDS]


def register(system, identifier, kind, config, **extra):
    """Register a daemon; refuse if one with this identifier is alive.

    A registration left behind by a dead daemon (no recent heartbeat, or
    its process gone on this host) is taken over.
    """
    at = now()
    doc = {"_id": identifier, "kind": kind, "hostname": hostname(),
           "pid": os.getpid(), "phase": "startup", "heartbeat": at,
           "started_at": at}
    doc.update(extra)
    existing = system.worker.find_one({"_id": identifier})
    if existing is None:
        try:
            system.worker.insert_one(doc)
            return doc
        except pymongo.errors.DuplicateKeyError:
            existing = system.worker.find_one({"_id": identifier}) or {}
    if _alive(existing, config, at):
        raise Core4UserError("%s %s is already running (pid %s on %s)" % (
            existing.get("kind", kind), identifier, existing.get("pid"),
            existing.get("hostname")))
    cas = {"_id": identifier}
    cas["heartbeat"] = (existing["heartbeat"] if "heartbeat" in existing
                        else {"$exists": False})
    if system.worker.replace_one(cas, doc).matched_count != 1:
        raise Core4UserError("%s %s is starting elsewhere at the same time"
                             % (kind, identifier))
    return doc


def _alive(doc, config, at):
    if doc.get("phase") == "exit":
        return False
    heartbeat = to_datetime(doc.get("heartbeat"))
    if heartbeat is None or \
            heartbeat < at - seconds(config.daemon.alive_timeout):
        return False
    if doc.get("hostname") == hostname():
        pid = doc.get("pid")
        return bool(pid) and pid != os.getpid() and psutil.pid_exists(pid)
    return True


def working(system, within):
    """The workers starting or in their loop whose heartbeat is at most
    ``within`` seconds old: ``{identifier: (phase, full)}``, ``full`` True
    if the worker ran as many jobs as it has slots at its last heartbeat."""
    return {doc["_id"]: (doc.get("phase"), bool(doc.get("max_jobs")) and
                         doc.get("jobs", 0) >= doc["max_jobs"])
            for doc in system.worker.find(
                {"kind": "worker", "phase": {"$in": ["startup", "loop"]},
                 "heartbeat": {"$gte": now() - seconds(within)}},
                {"phase": 1, "jobs": 1, "max_jobs": 1})}


def set_phase(system, identifier, phase):
    """Record the daemon's phase."""
    system.worker.update_one({"_id": identifier},
                             {"$set": {"phase": phase, "heartbeat": now()}})


def unregister(system, identifier):
    """Mark the daemon as exited."""
    set_phase(system, identifier, "exit")


def lease_settings(config):
    """Return ``(heartbeat, lease, margin)`` in seconds from
    ``config.daemon``: a lease lasts two heartbeats, the margin (default
    half a heartbeat) must lie between 0 and a heartbeat."""
    heartbeat = float(config.daemon.heartbeat)
    margin = config.daemon.lease_margin
    value = heartbeat / 2 if margin is None else float(margin)
    if not 0 < value < heartbeat:
        raise Core4UserError(
            "daemon.lease_margin must be > 0 and < daemon.heartbeat "
            "(%s), got %r" % (heartbeat, margin))
    return heartbeat, 2 * heartbeat, value
