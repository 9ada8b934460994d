"""The worker's resource gate: free memory and averaged CPU load."""

import collections
import time

import psutil


class ResourceMonitor:
    """Samples CPU load and available memory; says whether a worker may
    claim more (non-forced) jobs."""

    def __init__(self, max_cpu, min_free_ram, window):
        self.max_cpu = max_cpu
        self.min_free_ram = min_free_ram
        self.window = window
        self.samples = collections.deque()
        psutil.cpu_percent(interval=None)  # the first reading is meaningless

    def sample(self):
        """Take one sample (called by the worker's collect_stats step)."""
        at = time.monotonic()
        self.samples.append((at, psutil.cpu_percent(interval=None)))
        while self.samples and self.samples[0][0] < at - self.window:
            self.samples.popleft()

    def cpu(self):
        """CPU percent averaged over the window (0 before two samples, so
        the worker's own start-up load never closes the gate)."""
        if len(self.samples) < 2:
            return 0.0
        return sum(value for _, value in self.samples) / len(self.samples)

    def free_ram(self):
        """Available memory in MiB, now."""
        return psutil.virtual_memory().available / 2 ** 20

    def exhausted(self):
        """Return the reason not to claim, or None if resources suffice."""
        ram = self.free_ram()
        if ram < self.min_free_ram:
            return "available memory %.0f MiB < %s MiB" % (
                ram, self.min_free_ram)
        cpu = self.cpu()
        if cpu > self.max_cpu:
            return "CPU load %.0f%% > %s%%" % (cpu, self.max_cpu)
        return None


class HeldBack:
    """The jobs a worker holds back because it is short of CPU or memory:
    one INFO record "skipped job [<_id>] <name>: not enough resources
    (<what>)" when a job starts being held back, not at every claim."""

    def __init__(self, log):
        self.log = log
        self.ids = set()

    def note(self, short, candidates):
        """Record a claim round: ``short`` is why resources do not suffice
        (None if they do), ``candidates`` the jobs due for this worker
        (those not forced are held back while resources are short)."""
        if not short:
            self.ids.clear()
            return
        held = {candidate.id: candidate for candidate in candidates
                if not candidate.force}
        for job_id in held.keys() - self.ids:
            self.log.info("skipped job [%s] %s: not enough resources (%s)",
                          job_id, held[job_id].name, short)
        self.ids = set(held)
