"""Job dependencies and chains.

``dependency = [qual_name or job id, ...]``: the job waits (pending, with
``waiting_for`` and a "waiting for ..." progress message) until the jobs it
depends on have completed; if one ends in error, killed or inactive, the
dependent job ends in ``error`` with a ``last_error`` naming it.

``chain = [qual_name, ...]``: once a job completes, the listed jobs are
enqueued with ``enqueued.parent_id`` set to it.

Unknown names and cycles (through ``dependency`` and ``chain`` of the job
classes) are refused at enqueue.
"""

import datetime

from bson import ObjectId

from core4.error import Core4UserError, CoreJobExists, CoreJobInvalid
from core4.mongo import now
from core4.queue import lifecycle, states

#: ``query_at`` of a job that waits for its dependencies: never due
WAITING_AT = datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc)
#: states of a dependency that make its dependents fail
BROKEN = (states.ERROR, states.KILLED, states.INACTIVE)


def _is_id(value):
    return isinstance(value, ObjectId) or ObjectId.is_valid(str(value))


def _class_edges(name):
    """``dependency`` and ``chain`` names of the job class ``name`` (empty
    if the class cannot be loaded here)."""
    from core4.queue.loader import load_job_class
    try:
        cls = load_job_class(name)
    except Core4UserError:
        return []
    edges = []
    for attribute in ("dependency", "chain"):
        edges.extend(value for value in (cls.__dict__.get(attribute) or [])
                     if not _is_id(value))
    return edges


def check_references(queue, job):
    """Raise :class:`CoreJobInvalid` for unknown job names or ids in
    ``dependency`` / ``chain``, or for a cycle through them."""
    from core4.project.home import installed
    from core4.queue.loader import load_job_class
    for attribute in ("dependency", "chain"):
        for value in getattr(job, attribute) or []:
            if _is_id(value):
                if attribute == "chain":
                    raise CoreJobInvalid("%s: chain takes job names, not "
                                         "ids: %s" % (job.name, value))
                if queue.detail(value) is None:
                    raise CoreJobInvalid("%s: unknown job id %s in "
                                         "dependency" % (job.name, value))
                continue
            try:
                load_job_class(value)
            except Core4UserError as exc:
                if not installed(queue.config, value.split(".", 1)[0]):
                    raise CoreJobInvalid("%s: unknown job %s in %s: %s" % (
                        job.name, value, attribute, exc)) from None
    seen, stack = set(), [(job.name, [job.name])]
    first = [v for a in ("dependency", "chain")
             for v in getattr(job, a) or [] if not _is_id(v)]
    stack = [(name, [job.name, name]) for name in first]
    while stack:
        name, path = stack.pop()
        if name == job.name:
            raise CoreJobInvalid("%s: cycle through dependency/chain: %s" % (
                job.name, " -> ".join(path)))
        if name in seen:
            continue
        seen.add(name)
        stack.extend((nxt, path + [nxt]) for nxt in _class_edges(name))


def evaluate(queue, doc):
    """Return ``("ok", None)``, ``("wait", [names])`` or ``("failed",
    text)`` for the dependencies of the waiting job ``doc``."""
    waiting = []
    for dep in doc.get("waiting_for") or []:
        if _is_id(dep):
            found = queue.detail(dep)
            state = found["state"] if found else None
            if found and found.get("journaled") and state != states.COMPLETE:
                return "failed", "dependency %s was removed (%s)" % (
                    dep, state)
        else:
            state = _name_state(queue, dep, doc["_id"])
        if state == states.COMPLETE:
            continue
        if state in BROKEN:
            return "failed", "dependency %s ended %s" % (dep, state)
        waiting.append(str(dep))
    return ("wait", waiting) if waiting else ("ok", None)


def _name_state(queue, name, own_id):
    """The state that counts for a dependency on a job name: waiting while
    any job of the name is queued and not final, broken if one ended
    broken, complete if the latest one completed."""
    queued = [d for d in queue.sys.queue.find(
        {"name": name}, {"state": 1}) if d["_id"] != own_id]
    for doc in queued:
        if doc["state"] not in states.FINAL:
            return doc["state"]
    for doc in queued:
        if doc["state"] in BROKEN:
            return doc["state"]
    latest = list(queue.sys.journal.find({"name": name}, {"state": 1})
                  .sort("_id", -1).limit(1))
    return latest[0]["state"] if latest else None


def resolve_waiting(queue, log):
    """Release waiting jobs whose dependencies completed; fail those with a
    broken dependency. Returns the number of jobs that waited."""
    waited = 0
    for doc in queue.sys.queue.find({"state": states.PENDING,
                                     "query_at": {"$gte": WAITING_AT}}):
        if "waiting_for" not in doc:
            continue
        waited += 1
        verdict, detail = evaluate(queue, doc)
        guard = {"_id": doc["_id"], "state": states.PENDING,
                 "waiting_for": {"$exists": True}}
        if verdict == "ok":
            update = {"$unset": {"waiting_for": ""},
                      "$set": {"query_at": now(), "prog.message": None}}
        elif verdict == "failed":
            update = {"$set": {"state": states.ERROR, "finished_at": now(),
                               "last_error": lifecycle.error_document(
                                   message=detail)}}
        else:
            message = "waiting for %s" % ", ".join(detail)
            if (doc.get("prog") or {}).get("message") == message:
                continue
            update = {"$set": {"prog.message": message}}
        if queue.sys.queue.update_one(guard, update).modified_count:
            if verdict != "wait":
                log.info("job [%s] %s: %s", doc["_id"], doc["name"],
                         "dependencies complete" if verdict == "ok"
                         else detail)
    return waited


def enqueue_chain(queue, parent, docs, log):
    """Enqueue the jobs ``docs`` (documents made in the job's process)
    chained to the completed job ``parent``."""
    for doc in docs:
        try:
            child = queue.submit_document(doc, parent_id=parent["_id"])
            log.info("chained job [%s] %s after [%s]", child["_id"],
                     child["name"], parent["_id"])
        except CoreJobExists as exc:
            log.warning("chain of [%s]: %s", parent["_id"], exc)
