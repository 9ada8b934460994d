"""A job's progress, written to its document without letting a database
outage hold the job up.

``self.progress()`` stores ``prog`` and renews the job's heartbeat in
``sys_queue``. With the database away (an outage, a restart, a paused
server) a write hangs for the client's timeouts, and a job reporting
progress each second would be stalled for the whole outage. So a
:class:`ProgressWriter` writes from a thread of its own, started at the
first report. A report waits for its write as long as the database answers
within :data:`WAIT` seconds (``prog`` is stored when ``progress()``
returns, as before); while a write hangs, reports return at once and the
newest replaces those not written yet. The last one is written when the
job ends (waiting at most :data:`WAIT` seconds for it).
"""

import threading

#: seconds a report (and the job's end) waits for its write
WAIT = 1.0


class ProgressWriter:
    """Hands progress reports ``(value, message)`` to ``write`` in a
    background thread, newest first: ``write`` is called with the latest
    report whenever the previous call returned."""

    def __init__(self, write):
        self.write = write
        self.pending = None     # (number, value, message) not written yet
        self.number = 0         # reports so far
        self.written = 0        # number of the last report written
        self.busy = False       # a write is under way
        self.closed = False
        self.changed = threading.Condition()
        self.thread = None

    def put(self, value, message, wait=WAIT):
        """Report progress; wait up to ``wait`` seconds for the write
        unless an earlier write still hangs."""
        with self.changed:
            self.number += 1
            number, hanging = self.number, self.busy
            self.pending = (number, value, message)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="core4-progress", daemon=True)
                self.thread.start()
            self.changed.notify_all()
            if not hanging:
                self.changed.wait_for(lambda: self.written >= number, wait)

    def _run(self):
        while True:
            with self.changed:
                self.changed.wait_for(
                    lambda: self.pending is not None or self.closed)
                if self.pending is None:
                    return
                (number, value, message), self.pending = self.pending, None
                self.busy = True
            try:
                self.write(value, message)
            finally:
                with self.changed:
                    self.busy = False
                    self.written = number
                    self.changed.notify_all()

    def close(self, timeout=WAIT):
        """The job ended: write the last report, waiting at most
        ``timeout`` seconds (a write still hanging then is abandoned)."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)
