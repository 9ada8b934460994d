"""Fixes for gaps of the embedded NX-27017 server, applied inside the server
process when core4 starts it (see :mod:`core4.mongo.embedded`).

core4 pins the exact versions of ``nx-27017`` and ``neosqlite``; each fix
below wraps one function of those versions, so that the data core4 writes
looks the same as on a real MongoDB server. ``tests/test_nxpatch.py`` shows
each gap on a plain NX server and that it is gone on a server core4 started,
so a release that fixes a gap upstream is noticed.

1. ``$set`` (and ``find_one_and_update``, ``update_many``) of a datetime
   stored a *string*: neosqlite's SQL tier passes the value to SQLite,
   whose default adapter turns it into text. The fix hands a datetime to the
   SQL tier in neosqlite's own JSON form (``{"$date": ...}``, what an insert
   stores), and sends updates that use a datetime with any other operator
   (``$min``, ``$max``, ...) to neosqlite's Python tier.
2. Comparisons of datetimes (``$lt``, ``$lte``, ...) ran through SQLite's
   ``datetime()``, which drops the fraction of a second: a job due in
   0.5 s matched ``query_at <= now``. The fix compares at millisecond
   precision (BSON's own) with ``strftime('%Y-%m-%d %H:%M:%f', ...)``.
3. A change stream's ``$match`` knew no ``$or``/``$and`` (every event was
   then filtered out). The fix evaluates them.
4. A ``getMore`` on a change stream answered at once, ignoring
   ``maxTimeMS`` (the await time a client asks for), so a client waiting
   for events polled the server in a tight loop. The fix waits, outside the
   server's lock, until a write reaches the database or the time is up.
   Requests run on a thread pool whose default size (CPU count + 4) a few
   waiting streams would use up; the pool is made large (threads start
   only when needed). Only a write to the stream's own collection wakes
   it.

Three more change only what requests cost, with the same results:

5. A ``find`` with an inclusion projection (``{"state": 1, ...}``) made a
   deep copy of every document it read, of which it used only ``_id``.
   The fix builds the projection as neosqlite does, without the copy
   (exclusion projections still copy: they change the document).
6. Every look of a change stream for new events (also one that found
   none) deleted the events every stream had seen; the fix does that at
   most once a second per collection.
7. Every request ran on a thread of the pool, two thread hand-overs
   (~0.3 ms) per round trip. A request NX answers from its ``_id`` index
   (up to 16 statements by ``_id``, an insert of up to 16 documents,
   ``ping``; no string over 16 KiB) now runs on the event loop itself when
   its database's lock is free at that moment and no request of the pool
   waits for it; every other request, and one whose database is busy, runs
   on the pool as before, so the loop never waits for a scan or for
   another request's database lock (only for NX's short internal
   bookkeeping locks), and short requests in a row never starve the
   pool's.

Never imported by core4 itself outside the server process.
"""

import asyncio
import concurrent.futures
import contextvars
import datetime
import functools
import json
import threading
import time

from core4.mongo.compat import contains_datetime

#: the SQLite expression that keeps milliseconds (``datetime()`` does not)
MILLISECOND_TIME = "strftime('%Y-%m-%d %H:%M:%f', "
#: commands after which a waiting change stream looks for new events
WRITE_COMMANDS = ("insert", "update", "delete", "findAndModify",
                  "findandmodify", "bulkWrite", "drop", "dropDatabase")
#: most request threads of the server (they start only when needed)
MAX_THREADS = 512


def _fix_datetime_updates():
    from neosqlite.collection.json_helpers import neosqlite_json_dumps
    from neosqlite.collection.query_helper import _sql_updates

    convert = _sql_updates._convert_bytes_to_binary
    mixin = _sql_updates.SqlUpdatesMixin
    can_use_sql = mixin._can_use_sql_updates

    def convert_value(value):
        if isinstance(value, datetime.datetime):
            # a dict: the SQL tier stores it with json(), as an insert would
            return json.loads(neosqlite_json_dumps(value))
        return convert(value)

    def can_use_sql_updates(self, update_spec, doc_id, original_doc=None):
        if any(op != "$set" and contains_datetime(value)
               for op, value in update_spec.items()):
            return False
        return can_use_sql(self, update_spec, doc_id, original_doc)

    _sql_updates._convert_bytes_to_binary = convert_value
    mixin._can_use_sql_updates = can_use_sql_updates


def _fix_datetime_comparisons():
    from neosqlite.collection import sql_translator_unified as translator

    translate = translator.SQLOperatorTranslator.translate_operator

    def translate_operator(self, *args, **kwargs):
        clause, params = translate(self, *args, **kwargs)
        if isinstance(clause, str) and "datetime(" in clause:
            clause = clause.replace("datetime(", MILLISECOND_TIME)
        return clause, params

    translator.SQLOperatorTranslator.translate_operator = translate_operator


def _fix_change_stream_match():
    from nx_27017 import changestream

    match_spec = changestream._match_spec
    get_dotted = changestream._get_dotted

    def spec_matches(change, spec):
        for key, condition in spec.items():
            if key == "$or":
                if not any(spec_matches(change, part) for part in condition):
                    return False
            elif key == "$and":
                if not all(spec_matches(change, part) for part in condition):
                    return False
            elif not match_spec(get_dotted(change, key), condition):
                return False
        return True

    def pipeline_matches(change, pipeline):
        for stage in pipeline:
            if isinstance(stage, dict) and set(stage) == {"$match"} \
                    and isinstance(stage["$match"], dict) \
                    and not spec_matches(change, stage["$match"]):
                return False
        return True

    changestream._pipeline_matches = pipeline_matches


def _fix_projection_copies():
    from neosqlite.collection.query_helper import aggregation

    mixin = aggregation.AggregationMixin
    apply_projection = mixin._apply_projection
    is_expression = aggregation._is_expression

    def plain_inclusion(projection):
        values = projection.values()
        return any(value == 1 for value in values) and not any(
            is_expression(value)
            or (isinstance(value, str) and value.startswith("$"))
            for value in values)

    def include(self, projection, document):
        if not projection or not isinstance(document, dict) \
                or not plain_inclusion(projection):
            return apply_projection(self, projection, document)
        # neosqlite's inclusion mode, less the deep copy it only read _id of
        projected = {}
        for key, value in projection.items():
            if value == 1 and self._field_exists(document, key):
                projected[key] = self.collection._get_val(document, key)
        if projection.get("_id", 1) == 1 and "_id" in document:
            projected["_id"] = document["_id"]
        return projected

    mixin._apply_projection = include


#: seconds between two prunes of one collection's change-stream events
PRUNE_EVERY = 1.0


def _fix_change_stream_prune():
    from nx_27017 import changestream

    manager = changestream.ChangeStreamManager
    prune = manager._prune
    pruned = {}  # (database, collection) -> monotonic time of the last

    def prune_now_and_then(self, db_name, collection_name):
        key = (db_name, collection_name)
        at = time.monotonic()
        if at - pruned.get(key, float("-inf")) < PRUNE_EVERY:
            return
        pruned[key] = at
        prune(self, db_name, collection_name)

    manager._prune = prune_now_and_then


def _body(msg):
    for kind, doc in msg.get("sections") or ():
        if kind == "body" and isinstance(doc, dict):
            return doc
    return {}


def _fix_change_stream_await():
    from nx_27017 import handler as nxhandler

    cls = nxhandler.NeoSQLiteHandler
    handle_command = cls.handle_command
    handle_insert = cls.handle_insert
    written = threading.Condition()
    writes = {}  # collection name -> number of write commands

    def wrote(body):
        # the command's name is the body's first key, its value the
        # collection (a findAndModify body also holds an "update" key)
        name = body.get(next(iter(body), None)) if body else None
        if not isinstance(name, str):
            name = None
        with written:
            writes[name] = writes.get(name, 0) + 1
            written.notify_all()

    def await_events(self, msg, body):
        deadline = time.monotonic() + float(body["maxTimeMS"]) / 1000.0
        name = body.get("collection")

        def counts():
            return writes.get(name, 0), writes.get(None, 0)

        while True:
            with written:
                seen = counts()
            request_id, reply = handle_command(self, msg)
            remaining = deadline - time.monotonic()
            batch = (reply.get("cursor") or {}).get("nextBatch")
            if batch or remaining <= 0 or reply.get("ok") != 1:
                return request_id, reply
            with written:
                # sleep until this collection (or an unnamed one) is
                # written: writes to others (sys_log, ...) do not wake it
                written.wait_for(lambda: counts() != seen,
                                 min(remaining, 1.0))

    def command(self, msg):
        body = _body(msg)
        if "getMore" in body and body.get("maxTimeMS"):
            try:
                stream = self._change_stream_manager.get_stream(
                    int(body["getMore"]))
            except (TypeError, ValueError):
                stream = None
            if stream is not None:
                return await_events(self, msg, body)
        result = handle_command(self, msg)
        if next(iter(body), None) in WRITE_COMMANDS:
            wrote(body)
        return result

    def insert(self, msg):
        result = handle_insert(self, msg)
        wrote(_body(msg))
        return result

    cls.handle_command = command
    cls.handle_insert = insert

    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=MAX_THREADS, thread_name_prefix="nx-request")

    async def to_thread(func, /, *args, **kwargs):
        lock = _free_lock_of_short_request(func, args)
        if lock is not None:
            try:
                return func(*args, **kwargs)
            finally:
                lock.release()
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, func,
                                 *args, **kwargs)
        return await loop.run_in_executor(pool, call)

    asyncio.to_thread = to_thread


#: most documents or statements of a request run on the event loop
SHORT_MAX = 16
#: longest string or bytes value (in a document, a filter or an update) of
#: a request run on the event loop
SHORT_VALUE_MAX = 16 * 1024
#: commands without a collection that answer at once
INSTANT_COMMANDS = frozenset(("ping", "hello", "isMaster", "ismaster",
                              "buildInfo", "buildinfo", "endSessions"))
#: where each command keeps its filters: the key of its statements (None:
#: the body is the one statement) and the key of a statement's filter
FILTERS = {"find": (None, "filter"), "findAndModify": (None, "query"),
           "findandmodify": (None, "query"), "update": ("updates", "q"),
           "delete": ("deletes", "q")}
#: operators on other fields next to ``_id`` that neosqlite translates to
#: SQL (others make it read and filter every document in Python)
SIMPLE_OPERATORS = frozenset(("$eq", "$ne", "$lt", "$lte", "$gt", "$gte",
                              "$in", "$nin", "$exists"))


def _statements(msg, body, key):
    """The statements of the request ``msg`` under ``key`` (in its body or
    in a payload section)."""
    found = list(body.get(key) or ())
    for kind, doc in msg.get("sections") or ():
        if kind == "payload" and isinstance(doc, dict) and key in doc:
            value = doc[key]
            found.extend(value if isinstance(value, list) else [value])
        elif kind == "payload_docs" and key == "documents":
            found.extend(doc)
    return found


def _small(value, depth=3):
    """True if no string or bytes in ``value`` (looked into ``depth``
    levels deep) is longer than :data:`SHORT_VALUE_MAX`."""
    if isinstance(value, (str, bytes)):
        return len(value) <= SHORT_VALUE_MAX
    if depth and isinstance(value, dict):
        return all(_small(one, depth - 1) for one in value.values())
    if depth and isinstance(value, list):
        return len(value) <= SHORT_MAX and all(
            _small(one, depth - 1) for one in value)
    return True


def _by_id(query):
    """True if ``query`` selects at most :data:`SHORT_MAX` documents by
    ``_id`` and neosqlite translates all of it to SQL (what NX answers from
    its ``_id`` index)."""
    if not isinstance(query, dict) or "_id" not in query:
        return False
    for field, value in query.items():
        if field.startswith("$"):
            return False  # $or, $expr, ...: filtered in Python
        if isinstance(value, dict) and (
                any(not op.startswith("$") for op in value)
                or not set(value) <= SIMPLE_OPERATORS):
            return False
    value = query["_id"]
    if isinstance(value, dict):
        if set(value) == {"$eq"}:
            return True
        ids = value.get("$in")
        return set(value) == {"$in"} and isinstance(ids, list) \
            and 0 < len(ids) <= SHORT_MAX
    return not isinstance(value, list)


def is_short_request(msg):
    """True if NX answers the wire message ``msg`` from its ``_id`` index
    (or without a collection): few, small documents, never a scan."""
    body = _body(msg)
    name = next(iter(body), None)
    if name in INSTANT_COMMANDS:
        return True
    if name == "insert":
        docs = _statements(msg, body, "documents")
        return len(docs) <= SHORT_MAX and _small(docs)
    if name not in FILTERS:
        return False
    key, filter_key = FILTERS[name]
    if key is None:
        return _by_id(body.get(filter_key)) and _small(body)
    statements = _statements(msg, body, key)
    return 0 < len(statements) <= SHORT_MAX and all(
        isinstance(one, dict) and _by_id(one.get(filter_key))
        and _small(one) for one in statements)


def _free_lock_of_short_request(func, args):
    """The lock of the database of a short request for ``func`` (a
    handler's ``handle_command`` or ``handle_insert``), acquired, if it was
    free; else None (the request then runs on the pool)."""
    from nx_27017.handler import NeoSQLiteHandler, _msg_db_name
    handler = getattr(func, "__self__", None)
    if not isinstance(handler, NeoSQLiteHandler) or len(args) != 1 \
            or not isinstance(args[0], dict):
        return None
    inserts = func.__func__ is type(handler).handle_insert
    if not inserts and func.__func__ is not type(handler).handle_command:
        return None
    try:
        msg = args[0]
        # NX sends every request with a document sequence to handle_insert
        if inserts != (next(iter(_body(msg)), None) == "insert") \
                or not is_short_request(msg):
            return None
    except Exception:  # noqa: BLE001 - a malformed request: the pool's
        return None
    lock = handler._lock_for(_msg_db_name(msg))
    if getattr(lock, "waiting", 0) or not lock.acquire(blocking=False):
        return None  # busy, or a request of the pool waits for it
    return lock


class WaitedLock:
    """A database's re-entrant lock that counts the threads waiting for it:
    the event loop takes it only when none waits, so that short requests
    in a row never keep it from the pool's requests (a thread woken when
    the lock is released still has to win the GIL from the loop)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.count = threading.Lock()
        self.waiting = 0

    def acquire(self, blocking=True, timeout=-1):
        """Acquire the lock (as :meth:`threading.RLock.acquire`)."""
        if self.lock.acquire(blocking=False):
            return True
        if not blocking:
            return False
        with self.count:
            self.waiting += 1
        try:
            return self.lock.acquire(True, timeout)
        finally:
            with self.count:
                self.waiting -= 1

    def release(self):
        """Release the lock once."""
        self.lock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _count_lock_waiters():
    from nx_27017 import handler as nxhandler

    cls = nxhandler.NeoSQLiteHandler
    lock_for = cls._lock_for

    def waited_lock_for(self, db_name):
        if self._mode == "single":
            return lock_for(self, db_name)
        with self._dict_lock:
            lock = self._locks.get(db_name)
            if lock is None:
                lock = self._locks[db_name] = WaitedLock()
            return lock

    cls._lock_for = waited_lock_for


def apply():
    """Apply every fix (in the NX server process, before it serves)."""
    _fix_datetime_updates()
    _fix_datetime_comparisons()
    _fix_change_stream_match()
    _fix_change_stream_await()
    _fix_projection_copies()
    _fix_change_stream_prune()
    _count_lock_waiters()
