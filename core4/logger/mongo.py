"""Logging to the ``sys.log`` collection without ever blocking the caller.

:class:`MongoHandler` turns a record into a small document and puts it into
a bounded :class:`queue.Queue` (``logging.mongodb_queue``); when the queue
is full the record is dropped and counted. A daemon thread writes the queue
in batches with ``insert_many(ordered=False)``, retrying with backoff while
the server is unreachable; nothing it does raises into the code that logs.
After a drop, the next successful write adds one WARNING record saying how
many records were lost.

The writer thread opens ``sys.log`` lazily (a handler that never receives a
record never connects) and ensures its indexes: a TTL index on ``created``
(``logging.mongodb_ttl`` seconds) and single-field indexes on
``identifier``, ``qual_name`` and ``levelno``.

Fork safety: a forked child never uses its parent's queue or thread; the
handler resets itself after ``fork`` (and whenever it notices a new pid)
and starts its own writer on its first record.
"""

import datetime
import logging
import os
import queue
import threading
import time
import traceback
import weakref

import pymongo.errors
from bson import ObjectId

from core4.error import CoreDatabaseUnreachable
from core4.logger.adapter import fill_defaults, host_and_user
from core4.logger.exception import JobBuffer

UTC = datetime.timezone.utc
#: most records written with one insert_many
BATCH = 500
#: characters kept of a message, of an exception's repr and its traceback
MAX_TEXT = 256 * 1024
#: seconds a retired (replaced or closed) handler keeps retrying an
#: unreachable server before it drops what is left
RETIRE_AFTER = 10.0
#: longest pause between two attempts while the server is unreachable
MAX_BACKOFF = 5.0
#: errors after which a write may succeed when tried again
TRANSIENT = (pymongo.errors.ConnectionFailure, CoreDatabaseUnreachable,
             pymongo.errors.InvalidOperation)

_HANDLERS = weakref.WeakSet()


def _clip(text):
    if len(text) <= MAX_TEXT:
        return text
    return "%s... [%d characters cut]" % (text[:MAX_TEXT],
                                          len(text) - MAX_TEXT)


def record_document(record):
    """Return the ``sys.log`` document of a :class:`logging.LogRecord`.

    Its ``_id`` is made here, so sorting by ``created`` and ``_id`` keeps
    the order records of one process were logged in (``created`` has
    milliseconds only), and a retried write cannot store a record twice.
    """
    fill_defaults(record)
    qual_name = str(record.qual_name)
    doc = {
        # made now: records of one process in the same millisecond sort
        # in the order they were logged, also those written later
        "_id": ObjectId(),
        "created": datetime.datetime.fromtimestamp(record.created, UTC),
        "message": _clip(record.getMessage()),
        "level": record.levelname,
        "levelno": record.levelno,
        "qual_name": qual_name,
        "identifier": str(record.identifier or ""),
        "hostname": str(record.hostname),
        "username": str(record.username),
        "project": qual_name.split(".", 1)[0],
    }
    exc_info = record.exc_info
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        text = "".join(traceback.format_exception(*exc_info))
        doc["exception"] = {"info": _clip(repr(exc_info[1])),
                            "text": _clip(text).splitlines()}
    elif record.exc_text:
        doc["exception"] = {"info": "",
                            "text": _clip(record.exc_text).splitlines()}
    return doc


def _drop_notice(count):
    host, user = host_and_user()
    return {
        "created": datetime.datetime.now(UTC),
        "message": "%d log record(s) dropped: the sys.log queue was full"
                   % count,
        "level": "WARNING", "levelno": logging.WARNING,
        "qual_name": "core4.logger", "identifier": "", "hostname": host,
        "username": user, "project": "core4",
    }


def ensure_indexes(collection, ttl):
    """Create the indexes of ``sys.log`` that are missing."""
    from core4.mongo import ensure_index
    if ttl:
        ensure_index(collection, "created", expireAfterSeconds=int(ttl))
    else:
        ensure_index(collection, "created")
    for key in ("identifier", "qual_name", "levelno"):
        ensure_index(collection, key)


#: ``extra`` of a record meant for the terminal only, never for sys.log
#: (e.g. a worker's line per job: the job's own records are in sys.log)
CONSOLE_ONLY = {"console_only": True}


class MongoHandler(logging.Handler):
    """Queue records for ``sys.log``; a daemon thread writes them.

    ``level`` is the level written to ``sys.log``. With ``capacity`` > 0
    and ``level`` above DEBUG, the records of an identifier below ``level``
    are kept (see :class:`~core4.logger.exception.JobBuffer`) and written
    before a CRITICAL record of the same identifier.
    """

    def __init__(self, config, level=logging.INFO, ttl=None, maxsize=10000,
                 capacity=0):
        self.threshold = level
        buffering = capacity > 0 and level > logging.DEBUG
        super().__init__(logging.NOTSET if buffering else level)
        self.config = config
        self.ttl = ttl
        self.maxsize = max(1, int(maxsize))
        self.buffer = JobBuffer(capacity) if buffering else None
        #: pid of the process that created the handler
        self.owner = os.getpid()
        self.dropped = self.written = self.failed = 0
        self._reported = 0
        self._reset()
        _HANDLERS.add(self)

    def _reset(self):
        self._pid = os.getpid()
        self._queue = queue.Queue(self.maxsize)
        self._stop = threading.Event()
        self._thread = None
        self._retired_at = None
        self._failing = False

    def after_fork(self):
        """Forget the parent's queue, thread, kept records and counts."""
        self._reset()
        self.dropped = self.written = self.failed = self._reported = 0
        if self.buffer is not None:
            self.buffer.clear()

    # the caller's side ------------------------------------------------------

    def emit(self, record):
        if getattr(record, "console_only", False):
            return  # for the terminal only (see CONSOLE_ONLY)
        try:
            if self._pid != os.getpid():
                self.after_fork()
            below = record.levelno < self.threshold
            if below and (self.buffer is None
                          or not getattr(record, "identifier", None)):
                return
            doc = record_document(record)
            ident = doc["identifier"]
            if below:
                self.buffer.add(ident, doc)
                return
            if (self.buffer is not None and ident
                    and record.levelno >= logging.CRITICAL):
                for kept in self.buffer.pop(ident):
                    self._put(kept)
            self._put(doc)
        except Exception:  # noqa: BLE001 - logging never breaks the caller
            self.handleError(record)

    def _put(self, doc):
        if self._thread is None or not self._thread.is_alive():
            try:
                thread = threading.Thread(
                    target=self._run, args=(self._queue, self._stop),
                    name="core4-log-writer", daemon=True)
                thread.start()
            except RuntimeError:  # e.g. at interpreter shutdown
                self.dropped += 1
                return
            self._thread = thread
        try:
            self._queue.put_nowait(doc)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout=2.0):
        """Wait up to ``timeout`` seconds until every queued record is
        written (or given up); return True if the queue is done.

        A retired handler whose server is unreachable is not waited for
        (``logging.shutdown`` flushes every handler at exit)."""
        if self._pid != os.getpid():
            return True
        if self._retired_at is not None and self._failing:
            return self._queue.unfinished_tasks == 0
        q = self._queue
        deadline = time.monotonic() + timeout
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                q.all_tasks_done.wait(remaining)
        return True

    def retire(self):
        """Let the writer finish what is queued, then end (no waiting)."""
        if self._retired_at is None:
            self._retired_at = time.monotonic()
        self._stop.set()

    def close(self):
        self.retire()
        super().close()

    def stats(self):
        """Counts of this process: queued, written, dropped, failed."""
        return {"queued": self._queue.qsize(), "written": self.written,
                "dropped": self.dropped, "failed": self.failed}

    # the writer thread ------------------------------------------------------

    def _open(self):
        from core4.mongo import SystemCollections
        collection = SystemCollections(self.config).log
        try:
            ensure_indexes(collection, self.ttl)
        except pymongo.errors.OperationFailure:
            pass  # e.g. an index with other options exists: keep it
        return collection

    def _insert(self, collection, batch):
        try:
            collection.insert_many(batch, ordered=False)
            self.written += len(batch)
        except pymongo.errors.BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            # 11000: written by an attempt that seemed to fail
            self.failed += sum(1 for e in errors if e.get("code") != 11000)
            self.written += len(batch) - len(errors)
        if self.dropped > self._reported:
            count, self._reported = self.dropped - self._reported, self.dropped
            try:
                collection.insert_one(_drop_notice(count))
            except pymongo.errors.PyMongoError:
                pass

    def _giving_up(self, stop):
        return (stop.is_set() and self._retired_at is not None
                and time.monotonic() - self._retired_at > RETIRE_AFTER)

    def _run(self, q, stop):
        collection = None
        batch = []
        delay = 0.1
        while True:
            if not batch:
                try:
                    batch.append(q.get(timeout=0.2))
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                while len(batch) < BATCH:
                    try:
                        batch.append(q.get_nowait())
                    except queue.Empty:
                        break
            if not self._giving_up(stop):
                try:
                    if collection is None:
                        collection = self._open()
                    self._insert(collection, batch)
                except TRANSIENT as exc:
                    self._failing = True
                    if isinstance(exc, pymongo.errors.InvalidOperation):
                        collection = None  # e.g. its client was closed
                    time.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                except Exception:  # noqa: BLE001 - a batch that cannot be
                    self.failed += len(batch)  # written is dropped
                else:
                    delay = 0.1
                    self._failing = False
            else:
                self.failed += len(batch)
            for _ in batch:
                q.task_done()
            batch = []


def _after_fork_in_child():
    for handler in list(_HANDLERS):
        handler.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
