"""Job classes of the API tests (``tests/api``), run by the package's real
worker; :mod:`tests.apijobs.client` has the HTTP helpers of those tests."""

import os
import signal
import time

from core4.queue.job import CoreJob


class GateJob(CoreJob):
    """Log and print ``waiting for gate``, then wait until the file
    ``gate`` exists (at most ``timeout`` seconds) and log ``gate open``.

    A test controls when the job ends: it is running until the test
    creates the file. With ``fail`` it logs a DEBUG record first (kept
    back until the job fails) and fails after the gate opened; with
    ``stubborn`` it ignores SIGTERM (a kill takes the worker's grace). It
    writes its pid to ``<gate>.pid``."""

    author = "mra"

    def execute(self, gate=None, timeout=30, fail=False, stubborn=False,
                **kwargs):
        if stubborn:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        temp = "%s.%d" % (gate, os.getpid())
        with open(temp, "w") as handle:
            handle.write(str(os.getpid()))
        os.replace(temp, gate + ".pid")
        if fail:
            self.logger.debug("context of the failure")
            time.sleep(0.05)  # logged clearly before the next record
        self.logger.info("waiting for gate %s", gate)
        print("waiting for gate", flush=True)
        deadline = time.monotonic() + float(timeout)
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise RuntimeError("gate %s did not open" % gate)
            time.sleep(0.05)
        self.logger.info("gate open")
        print("gate open", flush=True)
        if fail:
            raise RuntimeError("failed on purpose")


class ParkedJob(CoreJob):
    """Runs only on the worker ``nowhere``, so it stays ``pending``."""

    author = "mra"
    worker = "nowhere"

    def execute(self, **kwargs):
        pass


class CountedJob(CoreJob):
    """Like :class:`ParkedJob`, under a name only the queue count test
    uses."""

    author = "mra"
    worker = "nowhere"

    def execute(self, **kwargs):
        pass


class QuickJob(CoreJob):
    """Print one line and end (a job of the project ``tests``)."""

    author = "mra"

    def execute(self, **kwargs):
        print("quick", flush=True)


class FailOnceJob(CoreJob):
    """Fail in its first trial (then ``failed`` for an hour), succeed in
    the next."""

    author = "mra"
    attempts = 2
    error_time = 3600

    def execute(self, **kwargs):
        if self.trial < 2:
            raise RuntimeError("the first trial fails")


class ChattyJob(CoreJob):
    """Log ``n`` INFO records ``record <i>``."""

    author = "mra"

    def execute(self, n=1, **kwargs):
        for i in range(int(n)):
            self.logger.info("record %d", i)


from core4.queue.helper.job.service import HttpService  # noqa: E402


class IdleService(HttpService):
    """An HttpService that stops after 3 seconds without a request."""

    author = "mra"
    idle_timeout = 3
    check_interval = 0.5


class CrashingService(HttpService):
    """An HttpService whose server dies once healthy (argument ``marker``:
    a file; each run appends a line, the second run stays up)."""

    author = "mra"
    attempts = 2
    check_interval = 0.5

    def command(self, port, prefix, marker=None, **kwargs):
        runs = 0
        if os.path.exists(marker):
            with open(marker) as handle:
                runs = len(handle.readlines())
        with open(marker, "a") as handle:
            handle.write("run\n")
        serve = super().command(port, prefix, **kwargs)
        if runs:
            return serve
        # the first run: healthy for a moment, then exits with code 3
        return ["bash", "-c", '"$@" & sleep 2; kill $!; exit 3', "serve",
                *map(str, serve)]
