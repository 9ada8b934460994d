r"""The job of bench/chaos.py: an OS-level witness of "never twice at once".

``WitnessJob`` holds an exclusive, non-blocking ``flock`` on
``<witness>/<key>.lock`` while it runs. An execution that finds the lock
held records ``overlap`` (a second live execution of the same job) and
fails. Every execution appends one line per event to ``<witness>/<key>.log``:
``kind pid ppid time trial`` with ``kind`` one of ``start``, ``end`` and
``overlap`` (``ppid`` is the launcher, or the worker in spawn mode, that
started it; ``time`` is ``time.time()``). The benchmark reads these logs to
find overlaps, orphans (recorded pids still alive) and recovery times
with :class:`Witness`.

The storm mode (bench/chaos_storm.py) runs thousands of short
``StormJob``\ s instead: all of them append to one file,
``<witness>/storm.log``, one O_APPEND write per record (``kind id pid
ppid time trial [ok|raise]``, ``id`` the job's ``_id``), and hold
``<witness>/locks/<id>.lock`` while their body runs; :class:`StormWitness`
reads that file as it grows.
"""

import fcntl
import os
import random
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


# the storm (bench/chaos_storm.py) ---------------------------------------------

#: the text of a StormJob's planned failure
PLANNED = "storm: a planned failure"


def storm_record(path, kind, job_id, trial, how=""):
    """Append ``kind id pid ppid time trial [how]`` to ``path`` in one
    O_APPEND write (records of concurrent jobs never interleave)."""
    line = "%s %s %d %d %.6f %s %s" % (kind, job_id, os.getpid(),
                                       os.getppid(), time.time(), trial, how)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip() + "\n").encode())
    finally:
        os.close(fd)


class StormJob(CoreJob):
    """Sleeps ``sleep`` seconds holding the flock of its job id, then
    raises with probability ``fail`` (see :data:`PLANNED`). Records its
    start and end (``ok`` or ``raise``) in ``<witness>/storm.log``; an
    execution that finds the lock held records ``overlap`` and fails."""

    author = "mra"

    def execute(self, witness, key, sleep=0.1, fail=0.0, **kwargs):
        path = os.path.join(witness, "storm.log")
        job_id, trial = str(self._id), getattr(self, "trial", None)
        lock = open(os.path.join(witness, "locks", job_id), "w")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                storm_record(path, "overlap", job_id, trial)
                raise RuntimeError("another execution of %s (%s) holds "
                                   "the lock" % (job_id, key))
            storm_record(path, "start", job_id, trial)
            time.sleep(float(sleep))
            failed = random.random() < float(fail)
            storm_record(path, "end", job_id, trial,
                         "raise" if failed else "ok")
        finally:
            lock.close()  # the body ended: the lock goes with it
        if failed:
            raise RuntimeError("%s of %s" % (PLANNED, key))


class Execution:
    """One execution of a StormJob, as its records and the witness saw
    it: ``start``/``end`` are ``time.time()``, ``end`` None without an end
    record; ``seen`` the last time its process was seen alive, ``dead``
    the first time it was seen gone."""

    __slots__ = ("job", "pid", "ppid", "trial", "start", "end", "how",
                 "seen", "dead")

    def __init__(self, job, pid, ppid, start, trial):
        self.job, self.pid, self.ppid = job, pid, ppid
        self.start, self.trial = start, trial
        self.end = self.how = self.dead = None
        self.seen = start

    def gone_at(self):
        """When the body was over: its end record, else when its process
        was first seen gone (None while it runs)."""
        return self.end if self.end is not None else self.dead


def alive_since(pid, start):
    """True if ``pid`` runs and is the process that started at ``start``
    (not a later process that reused the pid)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() <= start + 1.0 and \
            proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class StormWitness(threading.Thread):
    """Reads ``<directory>/storm.log`` as it grows and watches the process
    of every execution without an end record, so that an execution killed
    mid-body has a last time it was seen alive."""

    def __init__(self, directory):
        super().__init__(daemon=True)
        self.path = os.path.join(directory, "storm.log")
        self.offset, self.rest = 0, b""
        self.lock = threading.Lock()
        self.execs = []          # every Execution, in the order of the log
        self.by_job = {}         # job id -> [Execution]
        self.open = {}           # (job id, pid) -> Execution without end
        self.flock = []          # (job id, pid, time) of "overlap" records
        self.running = True

    def run(self):
        while self.running:
            self.poll()
            time.sleep(0.05)

    def poll(self):
        """Read the new records and look at every open execution. (Both
        this thread and the storm's kills call it: the read and its offset
        are under the lock, or two calls would read the same records.)"""
        with self.lock:
            try:
                with open(self.path, "rb") as handle:
                    handle.seek(self.offset)
                    data = handle.read()
            except FileNotFoundError:
                data = b""
            self.offset += len(data)
            data = self.rest + data
            cut = data.rfind(b"\n") + 1  # a record is read once it is whole
            data, self.rest = data[:cut], data[cut:]
            for line in data.decode().splitlines():
                self.add(line.split())
            for execution in list(self.open.values()):
                at = time.time()  # it lived at least until then
                if alive_since(execution.pid, execution.start):
                    execution.seen = at
                else:
                    execution.dead = at
                    del self.open[execution.job, execution.pid]

    def add(self, fields):
        """Take one record (caller holds the lock)."""
        if len(fields) < 6:
            return
        kind, job, pid, ppid, at, trial = fields[:6]
        pid, at = int(pid), float(at)
        if kind == "start":
            execution = Execution(job, pid, int(ppid), at, trial)
            self.execs.append(execution)
            self.by_job.setdefault(job, []).append(execution)
            self.open[job, pid] = execution
        elif kind == "end":
            execution = self.open.pop((job, pid), None)
            if execution is None:  # seen gone before its end was read
                execution = next((e for e in reversed(self.by_job.get(
                    job, [])) if e.pid == pid), None)
            if execution is not None:
                execution.end = at
                execution.how = fields[6] if len(fields) > 6 else "ok"
        elif kind == "overlap":
            self.flock.append((job, pid, at))

    def live(self):
        """``{pid: (job id, ppid)}`` of the executions running now."""
        self.poll()
        with self.lock:
            return {e.pid: (e.job, e.ppid) for e in self.open.values()}

    def next_start(self, job, after):
        """The first start of ``job`` later than ``after``, or None."""
        with self.lock:
            return min((e.start for e in self.by_job.get(job, ())
                        if e.start > after), default=None)

    def first_start(self, after):
        """The first start of any job later than ``after``, or None."""
        with self.lock:
            return min((e.start for e in self.execs if e.start > after),
                       default=None)

    def overlaps(self):
        """``(flock, interval)``: executions that found the lock held, and
        executions that started while the previous one of their job had
        not ended (its end record is later, or its process was seen alive
        after the start)."""
        interval = []
        with self.lock:
            for job, runs in sorted(self.by_job.items()):
                runs = sorted(runs, key=lambda e: e.start)
                for a, b in zip(runs, runs[1:]):
                    a_end = a.end if a.end is not None else a.seen
                    if b.start < a_end:
                        interval.append((job, a.pid, b.pid,
                                         round(a_end - b.start, 3)))
            return list(self.flock), interval
