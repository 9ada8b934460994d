"""Recovery of lost jobs, flags on running jobs, and inactivation of
deferred ones. Any live worker does this for every worker: a dead worker's
jobs are recovered by the others."""

from core4.mongo import elapsed, now, seconds, to_datetime
from core4.queue import lifecycle, states

#: the fields recovery reads of running and completed jobs
RECOVERY_FIELDS = ("state", "name", "locked", "killed_at", "removed_at",
                   "started_at", "runtime", "lost", "max_lost")


def recover_lost(queue, cutoff, log, skip=()):
    """Recover running jobs whose lease was last renewed before ``cutoff``
    (a datetime): their worker is dead, stopped or cut off.

    A lost job runs again at once without using up an attempt (see
    :func:`core4.queue.lifecycle.set_lost`); a pending kill request makes
    it ``killed``, a pending removal also journals it (as it does removed
    jobs whose run ended before their worker could journal them). Jobs in
    ``skip`` (the caller's own, alive) are left alone. A completed job whose
    process died before it was journaled is journaled. Returns the
    recovered documents.
    """
    recovered = []
    for doc in queue.sys.queue.find(
            {"state": {"$in": [states.RUNNING, states.COMPLETE]}},
            dict.fromkeys(RECOVERY_FIELDS, 1)):
        if doc["_id"] in skip:
            continue
        if doc["state"] == states.COMPLETE:
            full = queue.sys.queue.find_one({"_id": doc["_id"]})
            if full is not None and full["state"] == states.COMPLETE:
                lifecycle.journal(queue, full)
            continue
        locked = doc.get("locked") or {}
        if not locked.get("token"):
            continue  # not claimed by a worker (cannot be fenced)
        heartbeat = to_datetime(locked.get("heartbeat"))
        if heartbeat is not None and heartbeat >= cutoff:
            continue
        lost = "worker %s lost (no heartbeat since %.0f s)" % (
            locked.get("worker"), elapsed(heartbeat) if heartbeat else 0)
        if doc.get("killed_at"):
            after = lifecycle.set_killed(queue, doc, "killed; " + lost)
        else:
            after = lifecycle.set_lost(queue, doc, lost)
        if after is None:
            continue  # renewed or recovered by someone else meanwhile
        log.error("recovered job [%s] %s: %s -> %s", doc["_id"], doc["name"],
                  lost, after["state"])
        if after["state"] in lifecycle.DONE_LEVELS:
            lifecycle.log_done(after)  # its process could not say it
        if after.get("removed_at"):
            lifecycle.journal(queue, after)
        recovered.append(after)
    sweep_removed(queue)
    return recovered


def sweep_removed(queue):
    """Journal the jobs whose removal was requested while they ran and
    whose run has ended, but which are still in the queue (their worker
    died between recording the end and journaling them)."""
    for doc in queue.sys.queue.find({"removed_at": {"$exists": True}},
                                    {"state": 1}):
        if doc["state"] != states.RUNNING:
            full = queue.sys.queue.find_one({"_id": doc["_id"]})
            if full is not None and full["state"] != states.RUNNING:
                lifecycle.journal(queue, full)


def inactivate_deferred(queue):
    """Deferred jobs past ``inactive_at`` become ``inactive``; each gets
    its one "done execution with [inactive]" record. Returns how many."""
    at = now()
    count = 0
    for doc in queue.sys.queue.find(
            {"state": states.DEFERRED, "inactive_at": {"$lte": at}},
            {"name": 1, "last_error": 1}):
        # by _id and state: of several workers, one inactivates it
        if queue.sys.queue.update_one(
                {"_id": doc["_id"], "state": states.DEFERRED},
                {"$set": {"state": states.INACTIVE,
                          "finished_at": at}}).modified_count:
            count += 1
            lifecycle.log_done(dict(doc, state=states.INACTIVE))
    return count


def flag_running(queue, docs, log):
    """Set ``wall_at`` (non-stop) and ``zombie_at`` on running ``docs``,
    each once, and log it."""
    at = now()
    for doc in docs:
        started = to_datetime(doc["started_at"])
        wall_time = doc.get("wall_time")
        if wall_time and not doc.get("wall_at") \
                and started < at - seconds(wall_time):
            if queue.sys.queue.update_one(
                    lifecycle.fence(doc),
                    {"$set": {"wall_at": at}}).modified_count:
                log.warning("successfully set non-stop job [%s] %s",
                            doc["_id"], doc["name"])
        progressed = to_datetime((doc.get("prog") or {}).get("at"))
        last = max(started, progressed) if progressed else started
        if not doc.get("zombie_at") \
                and last < at - seconds(doc["zombie_time"]):
            if queue.sys.queue.update_one(
                    lifecycle.fence(doc),
                    {"$set": {"zombie_at": at}}).modified_count:
                log.warning("successfully set zombie job [%s] %s",
                            doc["_id"], doc["name"])
