"""A job never outlives its lease: the watchdog inside each job process.

A worker renews the leases of its running jobs in the database every half
heartbeat, and after each successful renewal it writes the monotonic time
at which the renewal began to its *lease file* (:func:`write_renewal`). A
job process reads that file every :data:`INTERVAL` seconds in a thread of
its own (:class:`Watchdog`). When the last renewal is older than
``lease - margin`` (its worker is dead, stopped with SIGSTOP, cut off from
the database or too slow), or when its launcher is gone (the process was
re-parented), the job is *fenced*: the watchdog records the outcome
``lost`` (unless the job reported one already) and stops the job's whole
process group, SIGTERM first and SIGKILL after ``grace`` seconds.

Another worker recovers a job only after ``lease + margin`` since its last
renewal (by the database's times), so the two executions never overlap as
long as the clocks of the hosts differ by less than ``margin``.

The watchdog is a Python thread: a job that holds the interpreter lock in
C code for longer than the margin delays it (it still runs as soon as the
job returns to Python).
"""

import os
import signal
import threading
import time

#: seconds between two looks at the lease file
INTERVAL = 0.2
#: outcome state a fenced job reports (the worker records it as lost)
LOST = "lost"


def write_renewal(path, began):
    """Record that a renewal which began at ``began`` (``time.monotonic()``)
    succeeded; written atomically."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write("%.6f\n" % began)
    os.replace(tmp, path)


def read_renewal(path):
    """The monotonic time of the last successful renewal, or None."""
    try:
        with open(path) as handle:
            return float(handle.read())
    except (OSError, ValueError):
        return None


class Watchdog:
    """Fences the job process it runs in (see the module docstring).

    Given to :meth:`arm`: ``lease_file`` is the worker's lease file,
    ``deadline`` the seconds (``lease - margin``) a renewal (or the job's
    claim, at ``claimed``, monotonic) may be old, ``grace`` the seconds
    between SIGTERM and SIGKILL, ``result_path`` where the outcome goes;
    ``write_result`` writes it.
    """

    def __init__(self, write_result):
        self.write_result = write_result
        self.parent = os.getppid()
        self.lease_file = self.result_path = None
        self.deadline = self.grace = 0.0
        #: the job's lease began at its claim, which may be later than the
        #: worker's last renewal of its other jobs' leases
        self.claimed = None
        self.armed = threading.Event()

    def start(self):
        """Start the daemon thread; it watches once :meth:`arm` was called
        (a spare starts it before its job is known, so that a thread's
        start is not on the way from the claim to the job)."""
        threading.Thread(target=self._watch, daemon=True,
                         name="core4-watchdog").start()
        return self

    def arm(self, lease_file, deadline, grace, result_path, claimed=None):
        """Watch the job whose lease is renewed in ``lease_file``."""
        self.lease_file = lease_file
        self.deadline = float(deadline)
        self.grace = float(grace)
        self.result_path = result_path
        self.claimed = claimed
        self.armed.set()

    def reason(self):
        """Why the job must stop now, or None."""
        if os.getppid() != self.parent:
            return "its launcher died"
        renewed = read_renewal(self.lease_file)
        if renewed is None:
            return "its worker is gone (no lease file %s)" % self.lease_file
        idle = time.monotonic() - max(renewed, self.claimed or renewed)
        if idle > self.deadline:
            return ("its lease was not renewed for %.1f s (its worker is "
                    "dead, stopped or cut off from the database)" % idle)
        return None

    def _watch(self):
        self.armed.wait()
        while True:
            time.sleep(INTERVAL)
            reason = self.reason()
            if reason is not None:
                self.fence(reason)
                return

    def fence(self, reason):
        """Record ``lost`` and stop the job's process group."""
        if not os.path.exists(self.result_path):
            self.write_result(self.result_path, {
                "state": LOST,
                "message": "stopped by its watchdog: %s" % reason})
        group = os.getpgid(0)
        # a helper outside the group sends the signals, so that the group
        # gets its grace period even though this process ends with it
        pid = os.fork()
        if pid == 0:
            try:
                # hold nothing of the job's (its files, locks, sockets)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                os.setpgid(0, 0)
                os.killpg(group, signal.SIGTERM)
                end = time.monotonic() + self.grace
                while time.monotonic() < end:
                    try:
                        os.killpg(group, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.05)
                else:
                    os.killpg(group, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os._exit(0)
