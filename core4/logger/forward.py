"""Job log records through the worker.

A job process does not open a database connection to log: its records go,
as one JSON document per line, to a file next to its output
(:class:`FileHandler`), and its worker forwards new lines of every running
job's file to ``sys.log`` with one ``insert_many`` per loop pass
(:class:`LogForwarder`). So logging costs a job no connection and never
blocks it, and a failing job's buffered DEBUG records travel the same way.
"""

import logging
import os
import sys

import pymongo.errors
from bson import json_util

from core4.logger.mongo import MongoHandler, ensure_indexes

_JSON = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL,
                              tz_aware=True)


def encode_record(doc):
    """A ``sys.log`` document as one line of a job's log file."""
    return json_util.dumps(doc, json_options=_JSON) + "\n"


def _same_file(handle, path):
    """True if the open file ``handle`` is the file at ``path``."""
    try:
        opened, found = os.fstat(handle.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (opened.st_dev, opened.st_ino) == (found.st_dev, found.st_ino)


class FileHandler(MongoHandler):
    """Writes ``sys.log`` documents to a file, one JSON line each (levels
    and the DEBUG buffer as :class:`MongoHandler`). The file is created at
    the first record (a handler set up ahead and never used leaves none);
    if it cannot be, one line on stderr says so and the records are
    dropped."""

    def __init__(self, path, level=logging.INFO, capacity=0):
        super().__init__(None, level=level, capacity=capacity)
        self.path = path
        self.moved_from = None  # the path before :meth:`move_to`
        self._file = None
        self._unwritable = False

    def _put(self, doc):
        if self._file is None:
            if self._unwritable:
                self.dropped += 1
                return
            try:
                self._file = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                self._unwritable = True
                self.dropped += 1
                sys.stderr.write("core4: the job's log records are lost: "
                                 "%s\n" % exc)
                return
        self._file.write(encode_record(doc))
        self._file.flush()
        self.written += 1

    def move_to(self, path):
        """Write to ``path`` from now on. A file opened already goes on
        being written if it is the file at ``path`` now (it was renamed
        there); else it is closed."""
        with self.lock:
            if self._file is not None and not _same_file(self._file, path):
                self._file.close()
                self._file = None
            self._unwritable = False  # (``path`` may well be writable)
            self.moved_from, self.path = self.path, path

    def flush(self, timeout=2.0):
        """Everything is written at once: nothing to wait for."""
        return True

    def close(self):
        if self._file is not None:
            self._file.close()
        super().close()


class LogForwarder:
    """Forwards the new lines of job log files to ``sys.log``."""

    def __init__(self, collection, ttl=None, limit=100000):
        self.collection = collection
        self.ttl = ttl
        self.limit = limit
        self.offsets = {}
        self.pending = []
        self.indexed = False

    def read(self, path):
        """Collect the complete lines added to ``path`` since last time."""
        offset = self.offsets.get(path, 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        if not end:
            return
        self.offsets[path] = offset + end
        for line in data[:end].splitlines():
            try:
                self.pending.append(json_util.loads(line.decode("utf-8")))
            except ValueError:
                pass
        if len(self.pending) > self.limit:
            del self.pending[:len(self.pending) - self.limit]

    def forget(self, path):
        """Stop following ``path`` (its job has ended)."""
        self.offsets.pop(path, None)

    def flush(self):
        """Write what was collected; keep it for later on a connection
        error (records carry their ``_id``: a retry never doubles one)."""
        if not self.pending:
            return
        if not self.indexed:
            try:
                ensure_indexes(self.collection, self.ttl)
            except pymongo.errors.OperationFailure:
                pass
            self.indexed = True
        batch, self.pending = self.pending, []
        try:
            self.collection.insert_many(batch, ordered=False)
        except pymongo.errors.BulkWriteError:
            pass  # duplicates of an earlier, interrupted attempt
        except pymongo.errors.ConnectionFailure:
            self.pending = batch + self.pending
            raise
