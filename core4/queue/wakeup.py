"""Wake-up of an idle worker: a change stream on ``sys_queue``.

A :class:`QueueWatch` reads a change stream in a background thread and
turns each event that may make a job claimable (an insert of a waiting job,
an update that sets a claimable ``state`` or moves ``query_at``), and each
claim of a job, into a :class:`Hint`. The worker waits on
:meth:`QueueWatch.fileno` (with its launchers' pipes, in one ``select``)
and takes the hints when it wakes.

A hint is only a hint: the claim itself checks the job's state and due time
atomically. Missed events are harmless because the worker also scans the
queue after (re)opening the stream and, slowly, as a fallback poll.

A server without change streams (a standalone mongod, for one) is detected
once, logged once, and the watch stops: the worker then polls.
"""

import collections
import os
import threading

import pymongo.errors

from core4.mongo import to_datetime
from core4.mongo.connection import short_error
from core4.queue import states

#: milliseconds a getMore waits on the server for new events
AWAIT_MS = 10000
#: the same for a worker alone: when another worker comes, its stream
#: reopens with the claims of jobs after at most this long
AWAIT_ALONE_MS = 5000
#: seconds between attempts to reopen a stream that failed
RETRY_SECONDS = 1.0
#: error codes of servers that have no change streams (standalone mongod:
#: 40573; a storage engine without them: 40324; unknown stage: 40324)
UNSUPPORTED_CODES = {40573, 40324, 115, 136}

Hint = collections.namedtuple("Hint", "id state trial query_at priority "
                                      "force name worker max_parallel",
                              defaults=(None,))

def pipeline(claims):
    """The change stream's pipeline: events that may make a job claimable,
    and with ``claims`` the claims of jobs (a job another worker took is no
    candidate any more, see :mod:`core4.queue.claim`; a worker alone has no
    use for them). ``fullDocument`` exists for inserts everywhere and, on
    the embedded server, for updates too (there, every update of a running
    job matches: each is a hint that it was taken); on MongoDB an update
    carries ``updateDescription`` instead."""
    wanted = list(states.CLAIMABLE) + ([states.RUNNING] if claims else [])
    return [{"$match": {"$or": [
        {"operationType": {"$in": ["insert", "replace"]},
         "fullDocument.state": {"$in": list(states.CLAIMABLE)}},
        {"operationType": "update", "fullDocument.state": {"$in": wanted}},
        {"operationType": "update",
         "updateDescription.updatedFields.state": {"$in": wanted}},
        {"operationType": "update",
         "updateDescription.updatedFields.query_at": {"$exists": True}},
    ]}}]


def _time(value):
    """A time from a change event: a datetime, or the embedded server's
    stored form ``{"$date": ISO}``; None if neither."""
    if isinstance(value, dict) and isinstance(value.get("$date"), str):
        import datetime
        try:
            value = datetime.datetime.fromisoformat(value["$date"])
        except ValueError:
            return None
    if hasattr(value, "tzinfo"):
        return to_datetime(value)
    return None


def hint_of(event):
    """Return the :class:`Hint` of a change event, or None. A hint in state
    ``running`` says that a worker took the job."""
    key = (event.get("documentKey") or {}).get("_id")
    if key is None:
        return None
    doc = event.get("fullDocument") or (
        (event.get("updateDescription") or {}).get("updatedFields")) or {}
    state = doc.get("state")
    if state == states.RUNNING:
        return Hint(key, state, None, None, None, False, None, None)
    if state is not None and state not in states.CLAIMABLE:
        return None
    priority = doc.get("priority")
    trial = doc.get("trial")
    return Hint(key, state, trial if isinstance(trial, int) else None,
                _time(doc.get("query_at")),
                priority if isinstance(priority, int) else None,
                bool(doc.get("force")), doc.get("name"), doc.get("worker"),
                doc.get("max_parallel"))


class QueueWatch:
    """Change-stream hints for one worker (see the module docstring)."""

    def __init__(self, collection, log, claims=False):
        self.collection = collection
        self.log = log
        self.hints = collections.deque()
        self.lock = threading.Lock()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.closed = threading.Event()
        #: set while the worker can use hints (it has free slots); a busy
        #: worker's stream waits, and its events come in one batch later
        self.wanted = threading.Event()
        self.wanted.set()
        #: True if the worker wants the claims of jobs (other workers
        #: share the jobs out); a change reopens the stream
        self.claims = claims
        self.await_ms = AWAIT_MS
        #: False once the server showed it has no change streams
        self.supported = True
        #: True while a stream is open (events are not being missed)
        self.open = False
        #: incremented each time a stream (re)opens: the worker scans then
        self.generation = 0
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="core4-queue-watch")

    def start(self):
        """Start the background thread."""
        self.thread.start()

    def fileno(self):
        """A descriptor that is readable when hints arrived."""
        return self.read_fd

    def take(self):
        """Return the hints that arrived since the last call (oldest first)
        and clear the wake-up descriptor."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            hints = list(self.hints)
            self.hints.clear()
        return hints

    def want(self, wanted, claims=False):
        """Tell the watch whether the worker can use hints now, and whether
        it wants the claims of jobs (the stream reopens for a change, when
        its current wait on the server ends)."""
        self.claims = claims
        if wanted:
            self.wanted.set()
        else:
            self.wanted.clear()

    def close(self):
        """Stop the thread (it ends at its next wake-up) and the pipe."""
        self.closed.set()
        self.wanted.set()
        self._wake()
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self):
        try:
            os.write(self.write_fd, b"1")
        except (BlockingIOError, OSError):
            pass  # already readable, or closed

    def _run(self):
        failing = False
        while not self.closed.is_set():
            try:
                claims = self.claims
                wait = self.await_ms if claims else \
                    min(self.await_ms, AWAIT_ALONE_MS)
                with self.collection.watch(
                        pipeline(claims), max_await_time_ms=wait) as stream:
                    self.open = True
                    self.generation += 1
                    if failing:
                        self.log.info("change stream on %s open again",
                                      self.collection.name)
                        failing = False
                    self._wake()  # the worker scans after each (re)open
                    while not self.closed.is_set() and \
                            claims == self.claims:
                        self.wanted.wait(1.0)
                        if not self.wanted.is_set():
                            continue
                        event = stream.try_next()
                        if event is None:
                            continue
                        hint = hint_of(event)
                        if hint is not None:
                            with self.lock:
                                self.hints.append(hint)
                            if hint.state != states.RUNNING:
                                # (a claim only drops a candidate: it is
                                # taken with the next hints or claim pass)
                                self._wake()
            except pymongo.errors.OperationFailure as exc:
                self.open = False
                if exc.code in UNSUPPORTED_CODES:
                    self.supported = False
                    self.log.warning(
                        "no change streams on this server (%s): the worker "
                        "polls for jobs instead", exc.details.get(
                            "errmsg", exc) if exc.details else exc)
                    self._wake()
                    return
                failing = self._failed(exc, failing)
            except (pymongo.errors.PyMongoError, OSError, ValueError) as exc:
                self.open = False
                if self.closed.is_set():
                    return
                failing = self._failed(exc, failing)
            self.open = False

    def _failed(self, exc, failing):
        if not failing:
            self.log.warning("change stream on %s lost: %s",
                             self.collection.name, short_error(exc))
        self.closed.wait(RETRY_SECONDS)
        return True
