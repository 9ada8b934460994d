"""The contract of the queue summary and history, the system (daemons
and maintenance), the audit trail, services and the document itself."""

from core4.api.schema import Body, Param
from core4.api.v1.contract.common import (BOOLEAN, COUNTS, DATETIME, ID,
                                          INTEGER, NULLABLE_STRING, OBJECT,
                                          PAGE, PER_PAGE, STRING, TIME)
from core4.api.v1.contract.jobs import STATE
from core4.api.v1.contract.ref import ref
from core4.queue import events

#: the most buckets of ``GET /queue/history``
MAX_BUCKETS = 2000
#: a project's name: a Python identifier
PROJECT = r"^[A-Za-z_][A-Za-z0-9_]*$"

HISTORY = [
    Param("since", DATETIME, "start (default one hour before until)"),
    Param("until", DATETIME, "end (default now)"),
    Param("interval", {"type": "number", "minimum": 0,
                       "exclusiveMinimum": True},
          "seconds per bucket (default: about 60 buckets); at most %d "
          "buckets (else 400)" % MAX_BUCKETS, messages={
              "minimum": "interval must be positive and give at most %d "
              "buckets" % MAX_BUCKETS})]
MAINTENANCE = Body({"paused": BOOLEAN, "project": {
    "type": "string", "pattern": PROJECT, "maxLength": 128}}, ("paused",),
    "pause or resume all jobs, or one project's (its jobs registered "
    "now or later)", messages={
        "project": dict.fromkeys(("pattern", "maxLength"),
                                 "project %(value)r is not a project name")})
AUDIT = [PAGE, PER_PAGE,
         Param("user", STRING, "only records of this user"),
         Param("action", {"type": "string",
                          "enum": list(events.AUDIT_ACTIONS)},
               "only records of this action", messages={
                   "enum": "unknown action %%(value)r (one of %s)" %
                   ", ".join(events.AUDIT_ACTIONS)}),
         Param("since", DATETIME, "created at or after (before until)"),
         Param("until", DATETIME, "created before")]

MAINTENANCE_MODE = {
    "type": "object", "required": ["global", "projects"],
    "properties": {"global": BOOLEAN,
                   "projects": {"type": "array", "items": STRING}}}
QUEUE = {
    "type": "object", "required": ["total", "state", "name"],
    "properties": {"total": INTEGER, "state": COUNTS, "name": {
        "type": "array", "items": {
            "type": "object", "required": ["name", "state", "n"],
            "properties": {"name": STRING, "state": STATE,
                           "n": INTEGER}}}}}
BUCKET = {"type": "object", "required": ["at", "size", "events"],
          "properties": {"at": STRING, "size": INTEGER, "events": COUNTS}}
DAEMON = {"type": "object", "additionalProperties": True,
          "required": ["_id", "kind"],
          "properties": {"_id": STRING, "kind": STRING,
                         "hostname": NULLABLE_STRING, "phase":
                         NULLABLE_STRING, "heartbeat": TIME,
                         "heartbeat_age": {"type": "number"}}}
AUDIT_RECORD = {
    "type": "object", "required": ["_id", "created", "user", "action",
                                   "target"],
    "properties": {"_id": ID, "created": TIME, "user": NULLABLE_STRING,
                   "action": NULLABLE_STRING, "target": OBJECT,
                   "hostname": NULLABLE_STRING}}
SERVICE = {
    "type": "object", "required": ["_id", "name", "state"],
    "properties": {"_id": ID, "name": STRING, "owner": NULLABLE_STRING,
                   "state": STATE, "started_at": TIME,
                   "health": {"nullable": True}, "health_at": TIME,
                   "used_at": TIME, "path": NULLABLE_STRING}}

SCHEMAS = {"AuditRecord": AUDIT_RECORD, "Daemon": DAEMON,
           "Service": SERVICE, "Maintenance": MAINTENANCE_MODE}

OPERATIONS = {
    ("QueueHandler", "get"): {"operationId": "getQueue", "data": QUEUE},
    ("QueueHistoryHandler", "get"): {
        "operationId": "getQueueHistory", "parameters": HISTORY,
        "data": {"type": "array", "items": BUCKET},
        "description": "since must be before until and give at most "
        "%d buckets of interval (else 400)" % MAX_BUCKETS},
    ("SystemHandler", "get"): {
        "operationId": "getSystem", "data": {
            "type": "object", "required": ["daemons", "maintenance"],
            "properties": {"daemons": {"type": "array",
                                       "items": ref("Daemon")},
                           "maintenance": ref("Maintenance")}}},
    ("MaintenanceHandler", "put"): {
        "operationId": "setMaintenance", "body": MAINTENANCE,
        "data": ref("Maintenance")},
    ("AuditHandler", "get"): {
        "operationId": "listAudit", "parameters": AUDIT,
        "data": {"type": "array", "items": ref("AuditRecord")},
        "paging": True,
        "description": "since must be before until (else 400)"},
    ("ServiceListHandler", "get"): {
        "operationId": "listServices",
        "data": {"type": "array", "items": ref("Service")},
        "links": {"StopFirstService": {
            "operationId": "stopService", "parameters": {
                "_id": "$response.body#/data/0/_id"}}}},
    ("ServiceStopHandler", "delete"): {
        "operationId": "stopService", "data": {
            "type": "object", "required": ["_id", "stopped"],
            "properties": {"_id": ID, "stopped": BOOLEAN}}},
    ("OpenApiHandler", "get"): {
        "operationId": "getOpenApi", "envelope": False, "data": OBJECT},
}
