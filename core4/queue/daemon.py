"""Daemon registry in ``sys_worker``: workers, schedulers and app servers
register there with kind, pid, phase and heartbeat."""

from core4.mongo import now

#: ids of control documents in sys_worker (not daemons)
CONTROL_IDS = ("__halt__", "__maintenance__")


def alive_daemons(system, config, kind=None):
    """Return the registered daemons whose heartbeat is recent enough."""
    query = {"kind": {"$exists": True},
             "heartbeat": {"$gte": now() - config.daemon.alive_timeout},
             "phase": {"$ne": "exit"}}
    if kind:
        query["kind"] = kind
    return [doc for doc in system.worker.find(query).sort("_id", 1)
            if doc["_id"] not in CONTROL_IDS]
