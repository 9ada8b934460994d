"""Migration of databases written by earlier core4 versions.

Schema 2 (core4 0.3) stores every time as a BSON datetime. Earlier versions
stored epoch seconds (floats) in the queue, the journal, the daemon
registry, the scheduler's records, roles and the job registry.
:func:`migrate` converts them in place: idempotent (a datetime is left
alone), safe to run while daemons run (each document is updated on its own,
only while the old value is still there), and it loses nothing (only the
time fields change). It runs when a daemon or ``coco --migrate`` finds the
schema marker ``__schema__`` in ``sys_worker`` missing or older.
"""

import datetime

from core4.mongo import to_datetime

#: the schema this core4 writes
SCHEMA = 2
SCHEMA_ID = "__schema__"

#: names of time fields, at the top level of a document or in one of
#: SUB_DOCUMENTS
TIME_FIELDS = frozenset((
    "query_at", "started_at", "finished_at", "first_started_at",
    "killed_at", "removed_at", "zombie_at", "wall_at", "inactive_at",
    "heartbeat", "at", "timestamp", "created", "updated", "last_login",
    "updated_at", "created_at", "until", "since", "wall", "fire",
    "finished"))
SUB_DOCUMENTS = ("enqueued", "locked", "prog", "last_error")
#: the sys collections that hold times
COLLECTIONS = ("queue", "journal", "worker", "schedule", "role", "job")


def _is_epoch(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def converted(doc):
    """Return ``{dotted field: datetime}`` for the epoch times in ``doc``."""
    fields = {}
    for key, value in doc.items():
        if key in TIME_FIELDS and _is_epoch(value):
            fields[key] = to_datetime(value)
        elif key in SUB_DOCUMENTS and isinstance(value, dict):
            for sub, item in value.items():
                if sub in TIME_FIELDS and _is_epoch(item):
                    fields["%s.%s" % (key, sub)] = to_datetime(item)
    return fields


def _guard(doc, fields):
    """Filter matching ``doc`` only while its old values are still there."""
    guard = {"_id": doc["_id"]}
    for dotted in fields:
        value = doc
        for part in dotted.split("."):
            value = value[part]
        guard[dotted] = value
    return guard


def schema_of(system):
    """Return the schema version recorded in ``sys_worker`` (1 if none)."""
    doc = system.worker.find_one({"_id": SCHEMA_ID}) or {}
    return doc.get("version", 1)


def migrate(system, log=None):
    """Convert the epoch times of the ``system`` collections (a
    :class:`core4.mongo.SystemCollections`) to datetimes and record the
    schema. Returns ``{collection name: documents changed}``."""
    changed = {}
    for name in COLLECTIONS:
        collection = getattr(system, name)
        count = 0
        for doc in collection.find({}):
            fields = converted(doc)
            if fields and collection.update_one(
                    _guard(doc, fields), {"$set": fields}).modified_count:
                count += 1
        if count:
            changed[collection.name] = count
            if log is not None:
                log.info("migrated %d document(s) of %s to datetimes",
                         count, collection.name)
    system.worker.update_one(
        {"_id": SCHEMA_ID},
        {"$set": {"version": SCHEMA,
                  "migrated_at": datetime.datetime.now(
                      datetime.timezone.utc)}}, upsert=True)
    return changed


def ensure_schema(system, log=None):
    """Migrate if the database is older than this core4; return what
    :func:`migrate` changed (empty if nothing was to do)."""
    if schema_of(system) >= SCHEMA:
        return {}
    return migrate(system, log)
