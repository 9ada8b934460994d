"""The contract of the job resources: the listing, enqueueing, one job,
its log, output and live events, and the actions on it."""

from core4.api.schema import Body, Param
from core4.api.v1.contract.common import (BOOLEAN, DATETIME, ID, INTEGER,
                                          NULLABLE_STRING, OBJECT, PAGE,
                                          PER_PAGE, STRING, TIME)
from core4.api.v1.contract.ref import ref
from core4.queue import states

#: ``package.module.Class``: dotted identifiers
QUAL_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
#: the longest qualified job name taken
MAX_QUAL_NAME = 256
#: fields a client may sort the job listing by
SORT_FIELDS = ("_id", "name", "state", "priority", "attempts_left",
               "enqueued.at", "enqueued.username", "started_at",
               "finished_at", "runtime", "prog.value")
#: the longest ``search`` of ``GET /job/list``, and its most wildcard runs
MAX_SEARCH = 200
MAX_WILDCARDS = 16
#: the most log records ``GET /job/<id>/log`` answers
MAX_LOG = 10000

STATE = {"type": "string", "enum": list(states.KNOWN)}

# parameters -----------------------------------------------------------------

STATES = Param("state", {"type": "array", "items": STATE},
               "only jobs in these states (repeat it, or separate them "
               "with commas)")
NAME = Param("name", STRING, "only jobs whose name starts with this")
USER = Param("user", STRING, "only jobs enqueued by this user")
SINCE = Param("since", DATETIME, "enqueued at or after (before until)")
UNTIL = Param("until", DATETIME, "enqueued before")
SORT = Param("sort", {"type": "string", "enum": [
    prefix + name for prefix in ("", "+", "-") for name in SORT_FIELDS]},
    "field to sort by, - for descending", default="_id",
    # a + sent unencoded in a query arrives as a space
    prepare=lambda value: "+" + value[1:] if isinstance(
        value, str) and value[:1] == " " else value, messages={
        "enum": "cannot sort by %%(value)r (one of %s, with - for "
        "descending)" % ", ".join(SORT_FIELDS)})
SOURCE = Param("source", {"type": "string", "enum": ["queue", "journal"]},
               "the queue (default) or the journal", default="queue",
               messages={"enum": "source must be queue or journal"})
SEARCH = Param("search", {
    "type": "string", "maxLength": MAX_SEARCH,
    "pattern": r"^[^*?]*([*?]+[^*?]*){0,%d}$" % MAX_WILDCARDS},
    "job name with * and ? wildcards (at most %d runs of them)" %
    MAX_WILDCARDS, messages={
        "maxLength": "search is longer than %d characters" % MAX_SEARCH,
        "pattern": "search has more than %d runs of wildcards (* and ?)" %
        MAX_WILDCARDS})
LIMIT = Param("limit", {"type": "integer", "minimum": 1,
                        "maximum": MAX_LOG},
              "the latest records", default=1000, messages=dict.fromkeys(
                  ("minimum", "maximum"), "limit must be 1 to %d" % MAX_LOG))
ENQUEUE = Body({"qual_name": {"type": "string", "pattern": QUAL_NAME,
                              "maxLength": MAX_QUAL_NAME},
                "args": OBJECT}, ("qual_name",),
               "the job's qualified name and its arguments",
               example={"qual_name": "core4.queue.helper.job.example."
                        "DummyJob", "args": {}}, messages={
                   "qual_name": dict.fromkeys(("pattern", "maxLength"), (
                       "qual_name %(value)r is not a qualified job name "
                       "like 'package.module.Class'"))})

# answers --------------------------------------------------------------------

FLAGS = {"type": "object", "properties": {
    name: BOOLEAN for name in ("zombie", "nonstop", "removed", "killed")}}
JOB = {
    "type": "object", "additionalProperties": True,
    "description": "a job document; a job the user may not read shows "
    "only its _id and state (name UnauthorizedJob, masked true). A job "
    "removed before it ended reads back from the journal as state "
    "removed.",
    "required": ["_id", "name", "state"],
    "properties": {
        "_id": ID, "name": STRING, "state": STATE,
        "masked": BOOLEAN, "journaled": BOOLEAN,
        "args": {"type": "object", "nullable": True,
                 "additionalProperties": True},
        "flags": FLAGS, "age": {"type": "number", "nullable": True},
        "runtime": {"type": "number", "nullable": True},
        "priority": INTEGER, "attempts_left": INTEGER, "trial": INTEGER,
        "enqueued": {"type": "object", "additionalProperties": True,
                     "properties": {"at": TIME,
                                    "username": NULLABLE_STRING}},
        "prog": {"type": "object", "additionalProperties": True,
                 "properties": {"value": {"type": "number",
                                          "nullable": True},
                                "message": NULLABLE_STRING}},
        "started_at": TIME, "finished_at": TIME, "removed_at": TIME,
        "killed_at": TIME}}
REGISTERED = {
    "type": "object", "additionalProperties": True,
    "required": ["name"],
    "properties": {"name": STRING, "project": NULLABLE_STRING,
                   "author": NULLABLE_STRING, "doc": NULLABLE_STRING,
                   "schedule": {"nullable": True},
                   "tag": {"nullable": True}}}
LOG_RECORD = {
    "type": "object", "additionalProperties": True,
    "required": ["_id"],
    "properties": {"_id": ID, "created": TIME, "level": NULLABLE_STRING,
                   "levelno": {"type": "integer", "nullable": True},
                   "message": NULLABLE_STRING,
                   "qual_name": NULLABLE_STRING,
                   "identifier": NULLABLE_STRING,
                   "hostname": NULLABLE_STRING,
                   "exception": {"nullable": True}}}
#: one server-sent event of ``GET /job/<id>/follow`` (``data`` is JSON)
SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "description": "one server-sent event: ``state`` (data: the job "
    "document), ``log`` (data: a log record; id: its _id) and finally "
    "``close`` (data: {_id, state, timeout, revoked})",
    "properties": {"event": {"type": "string",
                             "enum": ["state", "log", "close"]},
                   "data": STRING, "id": STRING}}


def _done(verb, **more):
    properties = {"_id": ID, verb: BOOLEAN}
    properties.update(more)
    return {"type": "object", "required": list(properties),
            "properties": properties}


def _job_links(source):
    """Links from an answer holding a job's id at ``source``."""
    params = {"_id": source}
    return {name: {"operationId": target, "parameters": params}
            for name, target in (
                ("GetJob", "getJob"), ("GetJobLog", "getJobLog"),
                ("GetJobStdout", "getJobStdout"),
                ("FollowJob", "followJob"), ("KillJob", "killJob"),
                ("RestartJob", "restartJob"), ("RemoveJob", "removeJob"))}


SCHEMAS = {"Job": JOB, "RegisteredJob": REGISTERED, "LogRecord": LOG_RECORD}

OPERATIONS = {
    ("JobHandler", "get"): {
        "operationId": "listJobs",
        "parameters": [PAGE, PER_PAGE, STATES, NAME, USER, SINCE, UNTIL,
                       SORT, SOURCE],
        "data": {"type": "array", "items": ref("Job")}, "paging": True,
        "links": {"GetFirstJob": {"operationId": "getJob", "parameters": {
            "_id": "$response.body#/data/0/_id"}}}},
    ("JobHandler", "post"): {
        "operationId": "enqueueJob", "body": ENQUEUE, "status": "201",
        "data": ref("Job"), "links": _job_links("$response.body#/data/_id"),
        "description": "404 if no job of that name is known"},
    ("JobListHandler", "get"): {
        "operationId": "listRegisteredJobs", "parameters": [SEARCH],
        "data": {"type": "array", "items": ref("RegisteredJob")}},
    ("JobDetailHandler", "get"): {
        "operationId": "getJob", "data": ref("Job")},
    ("JobDetailHandler", "delete"): {
        "operationId": "removeJob", "data": _done("removed"),
        "links": {"GetRemovedJob": {"operationId": "getJob", "parameters": {
            "_id": "$response.body#/data/_id"}}}},
    ("JobLogHandler", "get"): {
        "operationId": "getJobLog", "parameters": [LIMIT],
        "data": {"type": "array", "items": ref("LogRecord")}},
    ("JobStdoutHandler", "get"): {
        "operationId": "getJobStdout", "data": STRING},
    ("JobFollowHandler", "get"): {
        "operationId": "followJob", "content": "text/event-stream",
        "schema": SSE_EVENT, "headers": [{
            "name": "Last-Event-ID", "in": "header", "required": False,
            "schema": STRING, "description": "the id of the last log "
            "record received: resume after it"}]},
    ("JobActionHandler", "put", "kill"): {
        "operationId": "killJob", "data": _done("killed")},
    ("JobActionHandler", "put", "restart"): {
        "operationId": "restartJob",
        "data": _done("restarted", new_id=ID),
        "links": {"GetRestartedJob": {"operationId": "getJob", "parameters": {
            "_id": "$response.body#/data/new_id"}}}},
}
