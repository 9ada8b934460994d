"""A job's standard output and error go into a pipe, and what arrives is
appended to its capture file (which the worker stores in ``sys_stdout``).

A child of the job that reopens ``/dev/stdout`` or ``/dev/stderr`` (``echo
x > /dev/stderr``, ``tee /dev/stdout``) opens the pipe again, which it
cannot truncate or write into at another offset: were the descriptors the
capture file itself, such a reopen (``O_TRUNC``, offset 0) would wipe what
the job printed before and leave NUL bytes in its place.

* :class:`OutputCopies`: the fork launcher holds the read end of each of
  its job processes' pipes and copies into the capture files in its own
  loop, so a job process runs no thread for it.
* :class:`OutputPipe`: a job process started alone (``spawn`` mode) makes
  its own pipe and copies with a thread.

Should the launcher die, its jobs' writes fail (``EPIPE``) until their
watchdogs stop them (within :data:`core4.queue.launcher.watchdog.INTERVAL`).
"""

import os
import select
import sys
import threading
import time

#: bytes read from one pipe at a time
CHUNK = 65536


def append(fd, data):
    """Write all of ``data`` to ``fd``; give up silently on an error (a
    full disk must not block the job's writers)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            return


def open_capture(path):
    """Open (create, truncate) a capture file for writing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


class OutputCopies:
    """The read ends of the launcher's job pipes and their capture files.

    :meth:`pipe` makes a pipe for a child about to be forked (the child
    keeps the write end as its standard output and error, see
    :func:`attach`); :meth:`capture` names the child and the file its
    output goes to once the job is known; :meth:`copy` moves what arrived;
    :meth:`drain` copies all that is in a child's pipe now (before the
    launcher reports that its job is done, so the worker reads the
    complete file) and :meth:`close` ends the copy when the child exited.
    """

    #: bytes copied from one pipe per call of :meth:`copy`, so one chatty
    #: job cannot hold up the launcher
    TURN = 4 * CHUNK
    #: bytes copied at most when a job is done or has exited
    DRAIN = 256 * CHUNK

    def __init__(self):
        self.files = {}   # read end -> capture file descriptor (or None)
        self.reads = {}   # child's pid -> read end

    @staticmethod
    def pipe():
        """Return ``(read, write)`` for a new child; the read end is
        non-blocking and not yet copied from."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        return read, write

    def capture(self, pid, read, path):
        """Copy what child ``pid`` writes into ``read``'s pipe to the file
        at ``path`` (to nothing if it cannot be opened: the job runs all
        the same)."""
        try:
            self.files[read] = open_capture(path)
        except OSError:
            self.files[read] = None
        self.reads[pid] = read

    def fds(self):
        """The descriptors the launcher holds: read ends and files."""
        return (*self.files,
                *(fd for fd in self.files.values() if fd is not None))

    def copy(self, read, limit=TURN):
        """Copy up to ``limit`` bytes that arrived on ``read``; at the end
        of the pipe (no writer left) stop copying from it."""
        if self._move(read, limit):
            self._end(read)

    def drain(self, pid):
        """Copy all that is in child ``pid``'s pipe now (what the job
        process wrote before it said it is done; bounded, should its
        children keep writing)."""
        read = self.reads.get(pid)
        if read is not None:
            self.copy(read, limit=self.DRAIN)

    def close(self, pid):
        """Copy what is in child ``pid``'s pipe and stop (it exited;
        children it left behind lose their output, as when a job process
        copied itself)."""
        read = self.reads.get(pid)
        if read is not None:
            self._move(read, self.DRAIN)
            self._end(read)

    def close_all(self):
        """Stop every copy (the launcher ends)."""
        for read in list(self.files):
            self._end(read)

    def _move(self, read, limit):
        """Copy up to ``limit`` bytes; True at the end of the pipe."""
        copied = 0
        while copied < limit:
            try:
                data = os.read(read, CHUNK)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            if self.files[read] is not None:
                append(self.files[read], data)
            copied += len(data)
        return False

    def _end(self, read):
        os.close(read)
        target = self.files.pop(read)
        if target is not None:
            os.close(target)
        for pid in [pid for pid, fd in self.reads.items() if fd == read]:
            del self.reads[pid]


def attach(write):
    """Standard output and error of this process become the pipe's write
    end ``write`` (closed afterwards)."""
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)


class OutputPipe:
    """Standard output and error of this process (and so of every child
    it starts) go into a pipe; a thread appends what arrives to the
    capture file, the former standard output."""

    #: seconds :meth:`close` keeps copying what children still write
    DRAIN = 2.0

    def __init__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        self.read, write = OutputCopies.pipe()
        attach(write)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._copy, daemon=True,
                                       name="core4-output")
        self.thread.start()

    def _copy(self):
        poller = select.poll()
        poller.register(self.read, select.POLLIN)
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            stopping = self.stopping.is_set()
            if stopping and deadline is None:
                deadline = time.monotonic() + self.DRAIN
            if not poller.poll(0 if stopping else 100):
                if stopping:
                    return  # all written before the job ended is copied
                continue
            try:
                data = os.read(self.read, CHUNK)
            except BlockingIOError:
                continue
            if not data:
                return  # no writer left
            append(self.saved[0], data)

    def close(self):
        """Point standard output and error back at the capture file and
        copy what is still in the pipe; returns once the copy is done."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        self.stopping.set()
        self.thread.join(self.DRAIN + 5.0)
        if not self.thread.is_alive():
            os.close(self.read)
        for fd in self.saved:
            os.close(fd)
