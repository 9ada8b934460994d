"""How job documents look over the API: with flags and runtime, masked
for users who may not read them."""

from core4.mongo import elapsed, now
from core4.queue import secret, states

FLAG_FIELDS = (("zombie", "zombie_at"), ("nonstop", "wall_at"),
               ("removed", "removed_at"), ("killed", "killed_at"))


def present(doc, at=None):
    """Return ``doc`` with ``flags``, ``runtime`` (also of a running job)
    and ``age`` (seconds since enqueued); ``at`` is the datetime they are
    computed for (default: now). Secret arguments and their tokens show as
    ``***``, the hash is left out."""
    at = now() if at is None else at
    doc = dict(secret.mask_document(doc))  # secrets as ***
    doc["flags"] = {name: bool(doc.get(field))
                    for name, field in FLAG_FIELDS}
    if doc.get("state") == states.RUNNING and doc.get("started_at"):
        doc["runtime"] = max(0.0, elapsed(doc["started_at"], at))
    enqueued = (doc.get("enqueued") or {}).get("at")
    doc["age"] = max(0.0, elapsed(enqueued, at)) if enqueued else None
    if "force" in doc:
        doc["force"] = bool(doc["force"])
    doc.pop("_hash", None)
    return doc


def masked(doc):
    """Return what a user without read permission sees of a job."""
    return {"_id": doc["_id"], "name": "UnauthorizedJob",
            "state": doc.get("state"), "masked": True, "args": None}


def visible(doc, permissions, at=None):
    """Return the presented or the masked document for ``permissions``."""
    if permissions.can_read_job(doc.get("name", "")):
        return present(doc, at)
    return masked(doc)
