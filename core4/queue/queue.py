"""CoreQueue: enqueue jobs and ask for kill, restart, removal, halt and
maintenance.

Each request made here is audited: one event of channel ``audit`` (see
:func:`core4.queue.events.audit`) names who made it (``by``, default the
OS user, like ``enqueued.username``), the action and the job.

The queue only changes documents; workers act on them. Each operation is a
single atomic MongoDB update conditioned on the job's state, so it cannot
race a worker's claim.
"""

import pymongo
import pymongo.errors
from bson import ObjectId
from bson.errors import InvalidId

from core4.base import hostname, project_of, username
from core4.config import get_config
from core4.error import CoreJobExists, CoreJobNotFound, Core4UserError
from core4.mongo import (SystemCollections, ensure_index, now, id_in,
                         to_datetime)
from core4.queue import (dependency, events, lifecycle, migrate, secret,
                         states)
from core4.queue.job import CoreJob
from core4.queue.loader import load_job_class, make_job

HALT_ID = "__halt__"
MAINTENANCE_ID = "__maintenance__"


def parse_id(value):
    """Return ``value`` as an ObjectId or raise a clear user error."""
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError):
        raise Core4UserError("%r is not a job id (24 hex digits)" % (
            value,)) from None


class CoreQueue:
    """The job queue in ``sys_queue`` (and its history in ``sys_journal``)."""

    def __init__(self, config=None):
        self.config = config or get_config()
        self.sys = SystemCollections(self.config)
        self._indexed = False

    def setup(self):
        """Create the indexes the queue relies on (idempotent)."""
        if self._indexed:
            return
        ensure_index(self.sys.queue, [("name", 1), ("_hash", 1)],
                     unique=True)
        ensure_index(self.sys.queue, [("state", 1), ("query_at", 1)])
        # serves the claim's sort on a real MongoDB (an index that names
        # _id breaks every later insert on NX-27017)
        ensure_index(self.sys.queue, [("state", 1), ("force", -1),
                                      ("priority", -1)])
        events.setup(self.sys, self.config)
        ensure_index(self.sys.stdout, [("timestamp", 1)],
                     expireAfterSeconds=int(self.config.worker.stdout_ttl))
        migrate.ensure_schema(self.sys)
        self._indexed = True

    # enqueue ----------------------------------------------------------------

    def enqueue(self, job, /, **kwargs):
        """Enqueue a job class, job object or qualified name; return the job.

        ``kwargs`` are job properties or arguments (any name is fine). Raises
        :class:`CoreJobExists` if a job with the same name and arguments is
        already in the queue.
        """
        if isinstance(job, CoreJob):
            if kwargs:
                raise Core4UserError("pass properties and arguments to the "
                                     "job's constructor, not to enqueue()")
            job.validate()
        else:
            job = make_job(job, **kwargs)
        return self.submit(job)

    def submit(self, job, by=None, parent_id=None):
        """Insert a validated job object; ``by`` overrides the user name,
        ``parent_id`` links it to the job that triggered it (stored as
        ``enqueued.parent_id``, None if not given)."""
        if job.dependency or job.chain:
            dependency.check_references(self, job)
        doc = self.submit_document(job.serialise(), by, parent_id)
        job.__dict__.update({key: doc[key] for key in (
            "_id", "state", "attempts_left", "query_at", "enqueued",
            "prog")})
        return job

    def submit_document(self, doc, by=None, parent_id=None):
        """Insert a job document made by :meth:`CoreJob.serialise` (e.g. by
        the job process of a chain's parent); return the stored document."""
        self.setup()
        at = now()
        doc = dict(doc)
        by = by or username()
        doc.update(
            state=states.PENDING, attempts_left=doc["attempts"], trial=0,
            query_at=at, prog={"value": 0.0, "message": None},
            enqueued={"at": at, "hostname": hostname(), "username": by,
                      # always there, as upstream: None unless a job made it
                      "parent_id": parent_id})
        if doc.get("dependency"):
            doc["waiting_for"] = list(doc["dependency"])
            doc["query_at"] = dependency.WAITING_AT
            doc["prog"]["message"] = "waiting for %s" % ", ".join(
                str(value) for value in doc["dependency"])
        doc["_id"] = ObjectId()
        try:
            self.sys.queue.insert_one(doc)
        except pymongo.errors.DuplicateKeyError:
            raise CoreJobExists("job %s with args %r is already in the queue"
                                % (doc["name"], doc["args"])) from None
        events.emit(self.sys, [
            events.job_event("enqueue_job", doc),
            events.audit("enqueue", by, job_id=doc["_id"],
                         job_name=doc["name"], parent_id=parent_id)])
        return doc

    def _audit(self, action, by, doc=None, **target):
        """Emit the audit event of ``action`` by ``by`` (default the OS
        user) on the job ``doc``."""
        if doc is not None:
            target.update(job_id=doc["_id"], job_name=doc.get("name"))
        events.emit(self.sys, events.audit(action, by or username(),
                                           **target))

    # requests ---------------------------------------------------------------

    def kill(self, _id, by=None):
        """Kill a job: a waiting job at once, a running one by its worker.

        Returns True if the job was killed or a kill was requested (then
        audited as done ``by`` the user).
        """
        _id = parse_id(_id)
        at = now()
        doc = self.sys.queue.find_one_and_update(
            {"_id": _id, "state": {"$in": list(states.CLAIMABLE)}},
            {"$set": {"state": states.KILLED, "killed_at": at,
                      "finished_at": at,
                      "last_error": lifecycle.error_document(
                          message="killed before it ran again")}})
        if doc is not None:
            events.emit(self.sys, events.job_event(
                "kill_job", dict(doc, state=states.KILLED)))
            self._audit("kill", by, doc, running=False)
            return True
        doc = self.sys.queue.find_one_and_update(
            {"_id": _id, "state": states.RUNNING,
             "killed_at": {"$exists": False}},
            {"$set": {"killed_at": at}}, projection={"name": 1})
        if doc is not None:
            events.emit(self.sys, events.event_document(
                "request_kill_job", {"_id": _id}))
            self._audit("kill", by, doc, running=True)
            return True
        return False

    def restart(self, _id, by=None):
        """Restart a job; return the id of the job that will run, or None
        (a restart is audited as done ``by`` the user).

        A failed or deferred job keeps its ``_id`` and runs again now. A
        killed, inactive or errored job moves to the journal with
        ``enqueued.child_id`` and a new job with ``enqueued.parent_id``
        takes its place.
        """
        _id = parse_id(_id)
        doc = self.sys.queue.find_one_and_update(
            {"_id": _id, "state": {"$in": list(states.WAITING)}},
            {"$set": {"query_at": now()}}, projection={"name": 1})
        if doc is not None:
            self._audit("restart", by, doc, new_id=_id)
            return _id
        child_id = ObjectId()
        old = self.sys.queue.find_one_and_update(
            {"_id": _id, "state": {"$in": list(states.STOPPED)},
             "enqueued.child_id": {"$exists": False}},
            {"$set": {"enqueued.child_id": child_id}},
            return_document=pymongo.ReturnDocument.AFTER)
        if old is None:
            # a restart interrupted earlier: finish it
            old = self.sys.queue.find_one(
                {"_id": _id, "state": {"$in": list(states.STOPPED)}})
            if old is None or not (old.get("enqueued") or {}).get(
                    "child_id"):
                return None
            child_id = old["enqueued"]["child_id"]
        self._restart_stopped(old, child_id)
        events.emit(self.sys, events.event_document(
            "restart_stopped", {"_id": _id, "child_id": child_id}))
        self._audit("restart", by, old, new_id=child_id)
        return child_id

    def _restart_stopped(self, old, child_id):
        new = {key: value for key, value in old.items() if key not in (
            "_id", "last_error", "started_at", "finished_at", "runtime",
            "locked", "zombie_at", "wall_at", "killed_at", "removed_at",
            "inactive_at", "first_started_at")}
        at = now()
        enqueued = {key: value for key, value in old["enqueued"].items()
                    if key != "child_id"}
        enqueued.update(at=at, parent_id=old["_id"])
        new.update(_id=child_id, state=states.PENDING,
                   attempts_left=old["attempts"], query_at=at,
                   prog={"value": 0.0, "message": None}, enqueued=enqueued)
        new.pop("waiting_for", None)
        if new.get("dependency"):
            new["waiting_for"] = list(new["dependency"])
            new["query_at"] = dependency.WAITING_AT
            new["prog"]["message"] = "waiting for %s" % ", ".join(
                str(value) for value in new["dependency"])
        self.sys.journal.replace_one({"_id": old["_id"]}, old, upsert=True)
        self.sys.queue.delete_one({"_id": old["_id"]})
        try:
            self.sys.queue.insert_one(new)
        except pymongo.errors.DuplicateKeyError:
            pass  # inserted by the interrupted attempt

    def remove(self, _id, by=None):
        """Remove a job: a job that does not run moves to the journal now,
        in state ``removed`` (or its final state: ``killed``, ``error``,
        ``inactive``). A running job only gets ``removed_at``: its run goes
        on to its end, then the job moves to the journal in the state the
        run ended in if final (``complete``, ``error``, ...), else as
        ``removed``, and never runs again. :meth:`kill`
        stops a run.

        Returns True if the job was removed or its removal requested (then
        audited as done ``by`` the user).
        """
        _id = parse_id(_id)
        at = now()
        for _ in range(2):  # the job may start or end between the updates
            doc = self.sys.queue.find_one_and_update(
                {"_id": _id, "state": {"$ne": states.RUNNING}},
                {"$set": {"removed_at": at}},
                return_document=pymongo.ReturnDocument.AFTER)
            if doc is not None:
                lifecycle.journal(self, doc, removed=True)
                events.emit(self.sys, events.job_event("remove_job", doc))
                self._audit("remove", by, doc, running=False)
                return True
            doc = self.sys.queue.find_one_and_update(
                {"_id": _id, "state": states.RUNNING},
                {"$set": {"removed_at": at}}, projection={"name": 1})
            if doc is not None:
                self._audit("remove", by, doc, running=True)
                return True
            if self.sys.queue.find_one({"_id": _id}, {"_id": 1}) is None:
                return False
        return False

    def remove_hard(self, _id, by=None):
        """Delete a job from the queue at once (journaled), whatever its
        state; a running job's worker stops it when it sees it is gone
        (audited as done ``by`` the user)."""
        _id = parse_id(_id)
        doc = self.sys.queue.find_one({"_id": _id})
        if doc is None:
            return False
        doc["removed_at"] = now()
        self.sys.journal.replace_one({"_id": _id}, dict(
            doc, state=states.journaled_state(doc["state"])), upsert=True)
        deleted = self.sys.queue.delete_one({"_id": _id}).deleted_count == 1
        if deleted:
            events.emit(self.sys, events.job_event("remove_hard_job", doc))
            self._audit("remove_hard", by, doc)
        return deleted

    # control ----------------------------------------------------------------

    def halt(self, by=None):
        """Ask every daemon started before now to stop gracefully
        (audited as done ``by`` the user)."""
        at = now()
        self.sys.worker.update_one({"_id": HALT_ID}, {"$set": {"at": at}},
                                   upsert=True)
        self._audit("halt", by, at=at)
        return at

    def control(self):
        """Read ``sys_worker`` once: return ``(halt_at, maintenance,
        daemons)``, the time of the latest halt request (or None), the
        maintenance mode as :meth:`maintenance` returns it, and the
        registered daemons' documents."""
        halt_at, maintenance, daemons = None, {}, []
        for doc in self.sys.worker.find({}):
            if doc["_id"] == HALT_ID:
                halt_at = to_datetime(doc.get("at"))
            elif doc["_id"] == MAINTENANCE_ID:
                maintenance = doc
            elif "kind" in doc:
                daemons.append(doc)
        return halt_at, {"global": bool(maintenance.get("global", False)),
                         "projects": sorted(maintenance.get("projects")
                                            or [])}, daemons

    def halted_since(self, started_at):
        """True if a halt was requested after ``started_at``."""
        doc = self.sys.worker.find_one({"_id": HALT_ID})
        return bool(doc) and "at" in doc and \
            to_datetime(doc["at"]) >= started_at

    def pause(self, project=None, by=None):
        """Stop claims of all jobs, or of one project's jobs (audited as
        done ``by`` the user, with ``project`` None for all)."""
        self._ensure_maintenance()
        update = ({"$addToSet": {"projects": project}} if project
                  else {"$set": {"global": True}})
        self.sys.worker.update_one({"_id": MAINTENANCE_ID}, update)
        self._audit("pause", by, project=project or None)

    def resume(self, project=None, by=None):
        """Resume claims paused by :meth:`pause` (audited like it)."""
        self._ensure_maintenance()
        update = ({"$pull": {"projects": project}} if project
                  else {"$set": {"global": False}})
        self.sys.worker.update_one({"_id": MAINTENANCE_ID}, update)
        self._audit("resume", by, project=project or None)

    def _ensure_maintenance(self):
        # NX-27017 ignores $addToSet on a missing array: create it first
        self.sys.worker.update_one(
            {"_id": MAINTENANCE_ID},
            {"$setOnInsert": {"global": False, "projects": []}}, upsert=True)
        self.sys.worker.update_one(
            {"_id": MAINTENANCE_ID, "projects": {"$exists": False}},
            {"$set": {"projects": []}})

    def maintenance(self):
        """Return ``{"global": bool, "projects": [names]}``."""
        doc = self.sys.worker.find_one({"_id": MAINTENANCE_ID}) or {}
        return {"global": bool(doc.get("global", False)),
                "projects": sorted(doc.get("projects") or [])}

    def in_maintenance(self, name):
        """True if claims of the job ``name`` are paused."""
        mode = self.maintenance()
        return mode["global"] or project_of(name) in mode["projects"]

    # lookup -----------------------------------------------------------------

    def resolve(self, id_or_name, queued=False):
        """Return the ids of a job id or of all queued jobs of a name.

        A name may be any name the job class is known by (e.g. a re-export).
        With ``queued`` an id must be in the queue.
        """
        value = str(id_or_name)
        if ObjectId.is_valid(value):
            _id = ObjectId(value)
            if queued and self.sys.queue.find_one({"_id": _id},
                                                  {"_id": 1}) is None:
                raise CoreJobNotFound("job %s not found in the queue" % value)
            return [_id]
        if "." not in value:
            raise Core4UserError("%r is neither a job id nor a qualified "
                                 "job name" % value)
        names = [value]
        try:
            names.append(load_job_class(value).qual_name())
        except Core4UserError:
            pass
        ids = [d["_id"] for d in self.sys.queue.find(
            {"name": {"$in": names}}, {"_id": 1})]
        if not ids:
            raise CoreJobNotFound("no job %s in the queue" % value)
        return ids

    def detail(self, _id):
        """Return the job document from the queue, else from the journal
        (then with ``journaled: True``), else None; secret arguments show
        as ``***`` (see :mod:`core4.queue.secret`)."""
        _id = parse_id(_id)
        doc = self.sys.queue.find_one({"_id": _id})
        if doc is None:
            doc = self.sys.journal.find_one({"_id": _id})
            if doc is not None:
                doc["journaled"] = True
        if doc is not None and "force" in doc:
            doc["force"] = bool(doc["force"])
        return None if doc is None else secret.mask_document(doc)

    def stdout(self, _id):
        """Return the captured output of a job (bytes or str), or None."""
        doc = self.sys.stdout.find_one({"_id": parse_id(_id)})
        return None if doc is None else doc.get("stdout")

    def listing(self, *state):
        """Return the queued jobs, optionally of the given states."""
        query = {"state": {"$in": list(state)}} if state else {}
        return list(self.sys.queue.find(query).sort("_id", 1))

    def counts(self):
        """Return ``{state: number of queued jobs}``."""
        result = {}
        for doc in self.sys.queue.find({}, {"state": 1}):
            result[doc["state"]] = result.get(doc["state"], 0) + 1
        return result

    def children(self, parent_id):
        """Return the ids of jobs enqueued with ``enqueued.parent_id``."""
        query = {"enqueued.parent_id": id_in(parent_id)}
        return [d["_id"] for d in self.sys.queue.find(query, {"_id": 1})]
