"""The job of bench/chaos.py: an OS-level witness of "never twice at once".

``WitnessJob`` holds an exclusive, non-blocking ``flock`` on
``<witness>/<key>.lock`` while it runs. An execution that finds the lock
held records ``overlap`` (a second live execution of the same job) and
fails. Every execution appends one line per event to ``<witness>/<key>.log``:
``kind pid ppid time trial`` with ``kind`` one of ``start``, ``end`` and
``overlap`` (``ppid`` is the launcher, or the worker in spawn mode, that
started it; ``time`` is ``time.time()``). The benchmark reads these logs to
find overlaps, orphans (recorded pids still alive) and recovery times
with :class:`Witness`.
"""

import fcntl
import os
import threading
import time

import psutil

from core4.queue.job import CoreJob


def alive(pid):
    """True if ``pid`` runs (a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def record(path, kind, trial):
    """Append ``kind pid ppid time trial`` to ``path`` (one O_APPEND
    write, so concurrent writers never interleave)."""
    line = "%s %d %d %.6f %s\n" % (kind, os.getpid(), os.getppid(),
                                   time.time(), trial)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class WitnessJob(CoreJob):
    """Runs ``seconds`` while holding the witness lock of job ``key``."""

    author = "mra"

    def execute(self, witness, key, seconds=10.0, **kwargs):
        base = os.path.join(witness, key)
        trial = getattr(self, "trial", None)
        lock = open(base + ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record(base + ".log", "overlap", trial)
            raise RuntimeError("another execution of %s holds the lock" % key)
        record(base + ".log", "start", trial)
        end = time.monotonic() + float(seconds)
        while time.monotonic() < end:
            time.sleep(0.05)
        record(base + ".log", "end", trial)


class Witness(threading.Thread):
    """Reads the jobs' witness logs and watches every execution's pid, so
    that an execution killed without an ``end`` has a last time it was
    seen alive."""

    def __init__(self, directory, keys):
        super().__init__(daemon=True)
        self.directory, self.keys = directory, keys
        self.lock = threading.Lock()
        self.events = {}        # key -> [(kind, pid, ppid, at, trial)]
        self.seen = {}          # pid -> last time.time() seen alive
        self.ended = set()      # pids that logged "end" or were seen dead
        self.finished = set()   # pids that logged "end"
        self.dead = {}          # pid -> first time.time() seen dead
        self.running = True

    def run(self):
        while self.running:
            self.poll()
            time.sleep(0.05)

    def poll(self):
        """Read the logs once and look at every live execution."""
        events = {}
        for key in self.keys:
            try:
                with open(os.path.join(self.directory, key + ".log")) as h:
                    lines = h.read().split("\n")
            except FileNotFoundError:
                lines = []
            events[key] = [(k, int(p), int(pp), float(at), t) for k, p, pp,
                           at, t in (ln.split() for ln in lines if ln)]
        with self.lock:
            self.events = events
            self.finished = {pid for runs in events.values()
                             for kind, pid, _, _, _ in runs if kind == "end"}
            self.ended |= self.finished
            for runs in events.values():
                for kind, pid, _, _, _ in runs:
                    if kind == "start" and pid not in self.ended:
                        at = time.time()  # it lived at least until then
                        if alive(pid):
                            self.seen[pid] = at
                        else:
                            self.ended.add(pid)
                            self.dead[pid] = at

    def live(self):
        """``{pid: (key, ppid)}`` of the executions running now."""
        self.poll()
        with self.lock:
            return {pid: (key, ppid) for key, runs in self.events.items()
                    for kind, pid, ppid, _, _ in runs
                    if kind == "start" and pid not in self.ended}

    def starts(self, key, after=0.0):
        """Start times of ``key`` later than ``after``."""
        with self.lock:
            return [at for kind, _, _, at, _ in self.events.get(key, [])
                    if kind == "start" and at > after]

    def overlaps(self):
        """``(flock, interval)`` overlap lists: executions that found the
        lock held, and executions that started while the previous one of
        their job had not ended (it logged its end later or was seen
        alive after the start)."""
        flock, interval = [], []
        with self.lock:
            for key, runs in sorted(self.events.items()):
                flock += [(key, pid, at) for kind, pid, _, at, _ in runs
                          if kind == "overlap"]
                ends = {pid: at for kind, pid, _, at, _ in runs
                        if kind == "end"}
                starts = sorted((at, pid) for kind, pid, _, at, _ in runs
                                if kind == "start")
                for (a_at, a_pid), (b_at, b_pid) in zip(starts, starts[1:]):
                    a_end = ends.get(a_pid, self.seen.get(a_pid, a_at))
                    if b_at < a_end:
                        interval.append((key, a_pid, b_pid,
                                         round(a_end - b_at, 3)))
        return flock, interval
