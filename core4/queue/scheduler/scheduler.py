"""The scheduler: enqueues every valid job class with a ``schedule`` when
its fire time comes (``coco --scheduler [NAME]``).

A job is scheduled by a cron expression in its ``schedule`` attribute (or
at its dotted path in the configuration, which overrides the class). The
expressions are evaluated by ``croniter`` in ``scheduler.timezone``
(default ``UTC``); see :mod:`core4.queue.scheduler.schedule` for the fire
times and the catch-up policies.

Several schedulers may run at once (one per host, say). All keep
everything in ``sys_schedule``, every time as a BSON datetime (UTC,
milliseconds; the scheduler computes in epoch seconds and converts when it
reads and writes, reading the epoch seconds of core4 before 0.3 as well):

* ``{_id: "__leader__", holder, until, since}`` — the lease. One
  scheduler holds it and enqueues; it renews it every ``scheduler.interval``
  seconds for ``scheduler.lease`` seconds. The others stand by, try again
  every interval, and take over once ``until`` passed — within one lease
  (plus one interval) after the leader died. A leader that cannot renew in
  time stops enqueuing. Clocks of the hosts must agree to well within a
  lease.
* ``{_id: "last:<qual_name>", at, schedule, timezone}`` — the job's last
  handled fire time (``at``). A job seen for the first time, or whose
  schedule or the time zone changed, starts from *now* (no catch-up for a
  new schedule); a schedule removed and later restored unchanged catches up
  by its policy.
* ``{_id: "<qual_name>@<fire epoch>", fire, state, ...}`` — one marker per
  fire time ``fire`` (the ``_id`` has it in whole epoch seconds), inserted
  *before* the job is enqueued: its unique ``_id`` makes a fire time
  enqueued at most once, whichever scheduler runs. ``state`` is
  ``enqueuing``, then ``done`` (with ``job_id``), ``skipped`` (the previous
  run is still queued) or ``failed`` (with ``reason``). A marker left in
  ``enqueuing`` by a dead leader is taken over after one lease: the job is
  enqueued again unless a job of that name was enqueued since the
  interrupted attempt (in the queue or journal). Markers expire after 30
  days (a TTL index on ``created``).

The lease is :mod:`core4.queue.scheduler.lease`, the markers are
:mod:`core4.queue.scheduler.markers` and the leader's enqueuing of due fire
times (with the ``last:`` documents) is :mod:`core4.queue.scheduler.enqueue`.

After a downtime the missed fire times follow the catch-up policy, global
``scheduler.catchup`` or per job ``catchup`` at the job's dotted path in
the configuration: ``coalesce`` (default: one run for all missed), ``all``
(one run per missed fire time, at most 100, in order — the next one is
enqueued when the previous run has left the queue) or ``skip`` (missed fire
times are dropped; a fire time more than ``lease + interval`` seconds late
counts as missed). A fire time whose previous run is still queued is not
enqueued again (logged; with ``all`` it waits).

The job registry is re-read every ``scheduler.refresh`` seconds (in the
daemon by a background thread, so a slow introspection never delays the
lease): new, changed and removed schedules apply without a restart; the
leader also writes the entries to ``sys_job``. A job that is invalid (e.g.
its cron expression is wrong; ``coco --jobs`` shows why) is logged once per
change and not scheduled. If a project or module fails to introspect, its
jobs keep their previous schedules until it is fixed.
"""

import datetime
import logging
import os
import signal
import threading
import time

import pymongo.errors

from core4.base import hostname, project_of
from core4.config import class_config, get_config
from core4.config.folders import ensure_folders
from core4.error import Core4UserError
from core4.logger import get_logger, setup_logging
from core4.mongo import now as wall_now, to_datetime
from core4.mongo.connection import TRANSIENT, revive, short_error
from core4.queue.daemon import register, set_phase, unregister
from core4.queue.queue import CoreQueue
from core4.queue.scheduler.enqueue import ScheduleEnqueuer
from core4.queue.scheduler.lease import LEADER_ID, ScheduleLease
from core4.queue.scheduler.markers import FireMarkers
from core4.queue.scheduler.schedule import (COALESCE, POLICIES,
                                            check_expression, zone)

STARTUP, LOOP, EXIT = "startup", "loop", "exit"

__all__ = ["CoreScheduler", "LEADER_ID", "STARTUP", "LOOP", "EXIT"]


class CoreScheduler:
    """A scheduler daemon ``NAME@hostname`` (see the module docstring).

    ``clock`` returns the current epoch seconds; ``registry`` returns the
    registry entries (default :func:`core4.queue.registry.collect_all`).
    Tests drive :meth:`step` with their own ``now`` (epoch seconds or a
    datetime).
    """

    kind = "scheduler"

    def __init__(self, name="scheduler", config=None, clock=time.time,
                 registry=None):
        self.config = config or get_config()
        self.identifier = "%s@%s" % (name, hostname())
        self.queue = CoreQueue(self.config)
        self.sys = self.queue.sys
        self.log = get_logger("core4.queue.scheduler.CoreScheduler",
                              self.identifier)
        scfg = self.config.scheduler
        self.timezone = str(scfg.timezone)
        self.tz = zone(scfg.timezone)
        self.interval = _positive(scfg, "interval")
        self.lease = _positive(scfg, "lease")
        self.refresh = _positive(scfg, "refresh")
        if scfg.catchup not in POLICIES:
            raise Core4UserError("scheduler.catchup must be one of %s, got %r"
                                 % (", ".join(POLICIES), scfg.catchup))
        self.catchup = scfg.catchup
        #: a fire time later than this (seconds) is missed for ``skip``
        self.tolerance = self.lease + self.interval
        self.clock = clock
        self.registry = registry or self._collect
        self.phase = STARTUP
        self.entries = None         # qual_name -> scheduled registry entry
        self.started_at = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._background = False
        self._fresh = None          # entries read by the background thread
        self._unregistered = None   # entries not yet written to sys_job
        self._next_refresh = None
        self._reported = {}         # key -> problem logged once
        self._step_now = 0.0
        self._step_mono = 0.0
        self._outage = False
        self._lease = ScheduleLease(self.sys.schedule, self.identifier,
                                    self.lease, self.log)
        self.markers = FireMarkers(self.sys, self.identifier, self.lease,
                                   self.log, self._elapsed_now)
        self.enqueuer = ScheduleEnqueuer(
            self.queue, self.markers, self._holding, self.log, self.tz,
            self.timezone, self.catchup, self.tolerance)

    @property
    def leader(self):
        """True while this scheduler holds the lease (and enqueues)."""
        return self._lease.held

    @leader.setter
    def leader(self, value):
        self._lease.held = bool(value)

    def _collect(self):
        from core4.queue.registry import collect_all
        return collect_all(self.config)

    # the daemon -------------------------------------------------------------

    def start(self):
        """Register, run the loop until halted or signalled, then exit."""
        setup_logging(self.config)
        ensure_folders(self.config)
        self.started_at = wall_now()
        register(self.sys, self.identifier, self.kind, self.config)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.log.info("scheduler [%s] started (pid %d, time zone %s, "
                      "interval %s s, lease %s s, catch-up %s)",
                      self.identifier, os.getpid(), self.timezone,
                      self.interval, self.lease, self.catchup)
        try:
            self.setup()
            self._guarded("registry", self._read_registry)
            self._background = True
            threading.Thread(target=self._refresher, daemon=True,
                             name="core4-scheduler-registry").start()
            self.phase = LOOP
            set_phase(self.sys, self.identifier, LOOP)
            self.loop()
        finally:
            self.shutdown()

    def loop(self):
        """Step every ``scheduler.interval`` seconds until stopped."""
        while not self._stop.is_set():
            self._guarded("step", self.step)
            self._guarded("heartbeat", self.heartbeat)
            if not self._stop.is_set():
                self._guarded("halt", self._check_halt)
            if self._stop.is_set():
                break
            self._stop.wait(max(self.interval, 1.0) if self._outage
                            else self.interval)

    def _check_halt(self):
        if self.queue.halted_since(self.started_at):
            self.log.info("stopping: halt requested")
            self._stop.set()

    def heartbeat(self):
        """Renew the heartbeat in sys_worker (with phase and leadership)."""
        self.sys.worker.update_one(
            {"_id": self.identifier},
            {"$set": {"heartbeat": wall_now(), "phase": self.phase,
                      "leader": self.leader}})

    def _guarded(self, name, call):
        """Run ``call``; a database outage or an error never ends the loop.
        Returns True if it succeeded."""
        try:
            call()
        except TRANSIENT as exc:
            self.enqueuer.reset()
            if not self._outage:
                self.log.error("database unreachable in %s: %s", name,
                               short_error(exc))
            self._outage = True
            revive(self.config, self.log)  # the embedded server, if it died
            return False
        except Exception:
            self.enqueuer.reset()
            self.log.exception("%s failed", name)
            return False
        if self._outage:
            self.log.warning("database reachable again")
            self._outage = False
        return True

    def _on_signal(self, signum, frame):
        self.log.info("stopping: signal %d", signum)
        self._stop.set()

    def _refresher(self):
        """Background thread: re-read the registry every refresh seconds."""
        while not self._stop.wait(self.refresh if self.entries is not None
                                  else min(self.refresh, 5.0)):
            try:
                entries = self.registry()
            except Exception as exc:
                self._report("registry", "cannot read the job registry: "
                             "%s: %s" % (type(exc).__name__, exc))
                continue
            self._reported.pop("registry", None)
            with self._lock:
                self._fresh = entries

    def shutdown(self):
        """Give the lease up, unregister."""
        self._stop.set()
        self._lease.release()
        try:
            unregister(self.sys, self.identifier)
        except pymongo.errors.PyMongoError as exc:
            self.log.error("cannot unregister: %s", exc)
        self.phase = EXIT
        self.log.info("scheduler [%s] stopped", self.identifier)
        logging.shutdown()

    # one step ---------------------------------------------------------------

    def setup(self):
        """Create the TTL index of the fire-time markers (idempotent)."""
        self.markers.ensure_index()

    def step(self, now=None):
        """One pass at ``now`` (epoch seconds or a datetime, naive = UTC;
        default the clock): refresh the registry when due, hold or seek the
        lease, and if leading enqueue every due fire time. Returns True if
        leading."""
        if now is None:
            now = self.clock()
        if isinstance(now, datetime.datetime):
            now = to_datetime(now).timestamp()
        now = float(now)
        self._step_now, self._step_mono = now, time.monotonic()
        self.setup()
        self._take_registry(now)
        if not self._lead(now):
            return False
        if self._unregistered is not None:
            from core4.queue.registry import register as register_jobs
            register_jobs(self.sys, self._unregistered)
            self._unregistered = None
        if self.entries is not None:
            try:
                self.enqueuer.run(self.entries, now)
            except BaseException:
                self.enqueuer.reset()
                raise
        return self.leader

    def _elapsed_now(self):
        """``now`` of the step plus the time the step took so far."""
        return self._step_now + time.monotonic() - self._step_mono

    # registry ---------------------------------------------------------------

    def _take_registry(self, now):
        if self._background:
            with self._lock:
                fresh, self._fresh = self._fresh, None
            if fresh is not None:
                self._apply(fresh)
        elif self._next_refresh is None or now >= self._next_refresh:
            self._next_refresh = now + self.refresh
            self._read_registry()

    def _read_registry(self):
        try:
            entries = self.registry()
        except TRANSIENT:
            raise
        except Exception as exc:
            self._report("registry", "cannot read the job registry: %s: %s"
                         % (type(exc).__name__, exc))
            return
        self._reported.pop("registry", None)
        self._apply(entries)

    def _apply(self, raw):
        """Take the scheduled jobs of registry entries ``raw``."""
        new, broken, problems = {}, [], {}
        for entry in raw:
            name = str(entry.get("_id") or entry.get("name"))
            expression = entry.get("schedule")
            if not entry.get("valid"):
                broken.append((name, entry.get("exception")))
                if expression:
                    problems[name] = ("job %s (schedule %r) is invalid and "
                                      "not scheduled: %s" % (
                                          name, expression,
                                          entry.get("exception")))
                continue
            if not expression:
                continue
            problem = check_expression(expression)
            if problem:
                problems[name] = "job %s is not scheduled: %s" % (
                    name, problem)
                continue
            new[name] = dict(entry, _id=name, schedule=expression,
                             catchup=self._policy_of(name, entry, problems))
        old = self.entries or {}
        for prefix, why in broken:
            for name in sorted(old):
                if name.startswith(prefix + ".") and name not in new:
                    new[name] = old[name]
                    problems[name] = ("keeping the schedule %r of %s: %s "
                                      "cannot be introspected: %s" % (
                                          old[name]["schedule"], name,
                                          prefix, why))
        for key in [k for k in self._reported if k != "registry"]:
            if key not in problems:
                del self._reported[key]
        for key, text in sorted(problems.items()):
            self._report(key, text)
        if self.entries is not None:
            for name in sorted(set(old) | set(new)):
                before = (old.get(name) or {}).get("schedule")
                after = (new.get(name) or {}).get("schedule")
                if before != after:
                    self.log.info("schedule of %s: %s -> %s", name,
                                  before, after)
        self.entries = new
        self._unregistered = list(raw)

    def _policy_of(self, name, entry, problems):
        """The catch-up policy of job ``name``."""
        value = entry.get("catchup")
        if value is None:
            value = _class_catchup(self.config, name)
        if value is None and project_of(name) != "core4":
            try:
                value = _class_catchup(get_config(project_of(name)), name)
            except Exception:
                value = None
        if value is None:
            return self.catchup
        if value not in POLICIES:
            problems["catchup:" + name] = (
                "job %s: unknown catchup %r (one of %s), using %s" % (
                    name, value, ", ".join(POLICIES), COALESCE))
            return COALESCE
        return value

    def _report(self, key, text):
        """Log ``text`` at ERROR unless it was the last report of ``key``."""
        if self._reported.get(key) != text:
            self._reported[key] = text
            self.log.error(text)

    # leadership -------------------------------------------------------------

    def _lead(self, now):
        """Renew the lease or take it over if it expired."""
        was = self._lease.held
        got = self._lease.acquire(now)
        if got != was:
            self.enqueuer.reset()
        return got

    def _holding(self):
        """True if the lease surely lasts (see
        :meth:`~core4.queue.scheduler.lease.ScheduleLease.holding`)."""
        was = self._lease.held
        if self._lease.holding(self._elapsed_now):
            return True
        if was:
            self.enqueuer.reset()
        return False


def _positive(section, key):
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            value <= 0:
        raise Core4UserError("scheduler.%s must be a positive number of "
                             "seconds, got %r" % (key, value))
    return float(value)


def _class_catchup(config, name):
    node = class_config(config, name)
    return None if node is None else node.get("catchup")
