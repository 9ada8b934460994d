"""Flagging and recovery of running jobs, and inactivation of deferred
ones. Any live worker does this for every worker: a dead worker's jobs are
recovered by the others."""

from core4.mongo import now
from core4.queue import lifecycle, states


def recover_lost(queue, cutoff, log, skip=()):
    """Recover running jobs whose lease was last renewed before ``cutoff``.

    Each counts as a failed attempt naming the lost worker (retried while
    attempts remain, else ``error``); a pending kill request makes it
    ``killed``, a pending removal also journals it. Jobs in ``skip`` (the
    caller's own, alive) are left alone. Returns the recovered documents.
    """
    recovered = []
    for doc in queue.sys.queue.find(
            {"state": states.RUNNING, "locked.heartbeat": {"$lt": cutoff}}):
        if doc["_id"] in skip:
            continue
        locked = doc.get("locked") or {}
        lost = "worker %s lost (no heartbeat since %.0f s)" % (
            locked.get("worker"), now() - locked.get("heartbeat", 0))
        if doc.get("killed_at"):
            after = lifecycle.set_killed(queue, doc, "killed; " + lost)
        else:
            after = lifecycle.set_failed(
                queue, doc, lifecycle.error_document(message=lost))
        if after is None:
            continue  # renewed or recovered by someone else meanwhile
        log.error("recovered job [%s] %s: %s -> %s", doc["_id"], doc["name"],
                  lost, after["state"])
        if after.get("removed_at"):
            lifecycle.journal(queue, after)
        recovered.append(after)
    for doc in queue.sys.queue.find({"state": states.COMPLETE}):
        # a job process died between recording completion and journaling
        lifecycle.journal(queue, doc)
    return recovered


def inactivate_deferred(queue):
    """Deferred jobs past ``inactive_at`` become ``inactive``."""
    at = now()
    result = queue.sys.queue.update_many(
        {"state": states.DEFERRED, "inactive_at": {"$lte": at}},
        {"$set": {"state": states.INACTIVE, "finished_at": at}})
    return result.modified_count


def flag_running(queue, docs, log):
    """Set ``wall_at`` (non-stop) and ``zombie_at`` on running ``docs``,
    each once, and log it."""
    at = now()
    for doc in docs:
        wall_time = doc.get("wall_time")
        if wall_time and not doc.get("wall_at") \
                and doc["started_at"] < at - wall_time:
            if queue.sys.queue.update_one(
                    lifecycle.fence(doc),
                    {"$set": {"wall_at": at}}).modified_count:
                log.warning("successfully set non-stop job [%s] %s",
                            doc["_id"], doc["name"])
        last = max(doc["started_at"], (doc.get("prog") or {}).get("at") or 0)
        if not doc.get("zombie_at") and last < at - doc["zombie_time"]:
            if queue.sys.queue.update_one(
                    lifecycle.fence(doc),
                    {"$set": {"zombie_at": at}}).modified_count:
                log.warning("successfully set zombie job [%s] %s",
                            doc["_id"], doc["name"])
