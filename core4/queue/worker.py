"""The worker: claims jobs and runs each in its own OS process.

One loop (:meth:`CoreWorker.loop`) waits until something happens (a
change-stream hint that a job became due, a job process reporting, the
timer of the earliest deferred or failed job, the next step) and then runs
the steps of the execution plan that are due:

* ``work_jobs`` — claim due jobs by ``_id`` (:mod:`core4.queue.claim`) and
  start their processes. It runs at once when the change stream
  (:mod:`core4.queue.wakeup`) reports a job, when a slot frees, and when a
  waiting job's ``query_at`` passes; the interval is only the fallback
  poll, which backs off to ``worker.poll_max`` seconds while idle;
* ``heartbeat`` — renew the worker's heartbeat and the leases of its jobs
  (every ``daemon.heartbeat`` seconds; a lease expires after twice that);
* ``check_requests`` — halt, maintenance, kill and removal requests;
* ``flag_jobs`` — non-stop and zombie flags, deferred jobs turned inactive,
  jobs whose dependencies completed;
* ``recover_jobs`` — jobs of dead workers (expired leases) run again;
* ``collect_stats`` — CPU and memory for the resource gate.

The worker's phases are explicit: ``startup``, ``loop``, ``stopping`` (no
new claims; running jobs finish), ``shutdown`` and ``exit``.
"""

import logging
import os
import select
import signal
import time

import pymongo
import pymongo.errors

from core4.base import hostname
from core4.config import get_config
from core4.config.folders import ensure_folders
from core4.error import Core4UserError
from core4.logger import get_logger, setup_logging
from core4.logger.forward import LogForwarder
from core4.logger.mongo import CONSOLE_ONLY
from core4.mongo import now, seconds
from core4.mongo.connection import TRANSIENT, revive, short_error
from core4.queue import (dependency, events, lifecycle, recovery, states,
                         workdir)
from core4.queue.claim import Claimer, earliest
from core4.queue.finish import Finisher
from core4.queue.daemon import (lease_settings, register, set_phase,
                                unregister)
from core4.queue.parallel import ParallelLimit
from core4.queue.launcher.jobprocess import (JobProcess, enforce,
                                             job_files, publish_output,
                                             terminate_all)
from core4.queue.launcher.environments import Environments, EnvironmentProblem
from core4.queue.launcher.watchdog import write_renewal
from core4.queue.launcher.launcher import (Done, Exited, LauncherError,
                                           Started)
from core4.queue.queue import CoreQueue
from core4.queue.resources import HeldBack, ResourceMonitor
from core4.queue.wakeup import QueueWatch

#: seconds between writes of buffered events and job log records
FLUSH_INTERVAL = 0.25

STARTUP, LOOP, STOPPING, SHUTDOWN, EXIT = (
    "startup", "loop", "stopping", "shutdown", "exit")


class CoreWorker:
    """A worker daemon ``NAME@hostname`` (see the module docstring)."""

    kind = "worker"

    def __init__(self, name="worker", config=None, start_method=None):
        self.config = config or get_config()
        self.identifier = "%s@%s" % (name, hostname())
        self.queue = CoreQueue(self.config)
        self.log = get_logger("core4.queue.worker.CoreWorker",
                              self.identifier)
        wcfg = self.config.worker
        self.start_method = start_method or wcfg.start_method
        if self.start_method not in ("fork", "spawn"):
            raise Core4UserError("worker.start_method must be fork or spawn, "
                                 "got %r" % self.start_method)
        self.heartbeat, self.lease, self.margin = lease_settings(self.config)
        self.lease_file = None
        self.renewed_at = time.monotonic()   # last successful renewal
        self.plan = {step: float(wcfg.execution_plan[step]) for step in (
            "work_jobs", "check_requests", "flag_jobs", "recover_jobs",
            "collect_stats", "publish_output")}
        self.plan["heartbeat"] = self.heartbeat
        self.resources = ResourceMonitor(wcfg.max_cpu, wcfg.min_free_ram,
                                         wcfg.avg_stats_secs)
        self.held_back = HeldBack(self.log)  # jobs waiting for resources
        self.jobs = {}              # job id -> JobProcess
        self.exiting = {}           # id -> ended (None) or dropped, alive
        self.phase = STARTUP
        self.started_at = None
        self.stop_deadline = None
        self.signals = 0
        self.maintenance = {"global": False, "projects": []}
        self.next_run = {}
        self.claimer = Claimer(self.queue, self.identifier, self.lease)
        self.parallel = ParallelLimit(self.queue, self.identifier,
                                      self.claimer.peers, self.lease)
        self.watch = None
        self.watch_generation = 0
        self.work_now = True        # claim at the next pass (not only poll)
        self.poll_interval = self.plan["work_jobs"]
        self.poll_max = max(float(wcfg.poll_max), self.poll_interval)
        self.dependents_waiting = True
        self.finisher = None        # records how job processes ended
        self.connected_since = None
        self.outage_until = 0.0
        self.kill_grace = float(wcfg.kill_grace)
        self.envs = None
        self.events = None
        self.logs = None
        self.work_dir = None
        self.out_dir = None

    # the loop ---------------------------------------------------------------

    def start(self):
        """Register, run the loop until stopped, then shut down."""
        setup_logging(self.config)
        ensure_folders(self.config)
        self.started_at = now()
        register(self.queue.sys, self.identifier, self.kind, self.config,
                 max_jobs=self.config.worker.max_jobs)
        self.work_dir = workdir.WorkDir.after_sweep(self.log)
        self.out_dir = self.work_dir.path
        self.lease_file = self.work_dir.file("lease")
        write_renewal(self.lease_file, time.monotonic())
        self.envs = Environments(self.config, self.start_method)
        self.events = events.EventBuffer(self.queue.sys)
        if self.config.logging.get("mongodb"):
            self.logs = LogForwarder(self.queue.sys.log,
                                     self.config.logging.get("mongodb_ttl"))
        self.finisher = Finisher(self.queue, self.events, self.logs,
                                 self.log, self.config.worker.stdout_max)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.queue.setup()
        self.claimer.share_out()  # (with other workers, a stream of claims)
        if self.config.worker.change_stream:
            self.watch = QueueWatch(self.queue.sys.queue, self.log,
                                    claims=self.claimer.wants_claims())
            self.watch.start()
        else:
            self.log.info("change stream off (worker.change_stream): the "
                          "worker polls for jobs")
        self.connected_since = time.monotonic()
        self.log.info("worker [%s] started (pid %d, %s mode)",
                      self.identifier, os.getpid(), self.start_method)
        try:
            self.phase = LOOP
            set_phase(self.queue.sys, self.identifier, LOOP)
            self.claimer.share_out()
            self.loop()
        finally:
            self.shutdown()

    def loop(self):
        """Run the execution plan until the worker stops."""
        # claims first: a woken worker starts its job before other steps
        steps = (("work_jobs", self.work), ("heartbeat", self.renew),
                 ("check_requests", self.check), ("flag_jobs", self.flag),
                 ("recover_jobs", self.recover),
                 ("collect_stats", self.resources.sample),
                 ("publish_output", self.publish_output))
        # maintenance and halt requests are known before the first claim
        self.next_run["check_requests"] = time.monotonic() + \
            self.plan["check_requests"]
        self.guarded("check_requests", self.check)
        while True:
            self.handle_events()
            if self.phase == STOPPING and not self.jobs:
                return
            if self.phase == STOPPING and time.monotonic() > \
                    self.stop_deadline:
                terminate_all(self.jobs, "stopped by %s after the grace "
                              "period" % self.identifier, self.kill_grace)
            self.take_hints()
            at = time.monotonic()
            for name, step in steps:
                due = at >= self.next_run.get(name, 0) or (
                    name == "work_jobs" and self.work_now)
                if due and at >= self.outage_until:
                    if name == "work_jobs" and not self.work_now:
                        self.claimer.scan_wanted = True  # the fallback poll
                    self.next_run[name] = at + self.interval(name)
                    self.guarded(name, step)
            if time.monotonic() >= self.next_run.get("flush", 0):
                # events and log records are written a few times a second,
                # not once per pass: that keeps them off the claim's path
                self.next_run["flush"] = time.monotonic() + FLUSH_INTERVAL
                self.events.flush()
                self.forward_logs()
            self.wait()

    def interval(self, name):
        """Seconds until step ``name`` runs again: the work step's is the
        fallback poll's; leases are renewed every half heartbeat while jobs
        run (their watchdogs stop them at ``lease - margin``)."""
        if name == "work_jobs":
            return self.poll_interval
        if name == "heartbeat" and self.jobs:
            return self.heartbeat / 2
        return self.plan[name]

    def guarded(self, name, step):
        """Run one step; a database outage backs off, never stops the loop.
        Returns True if the step succeeded."""
        started = time.monotonic()
        try:
            step()
            took = time.monotonic() - started
            if self.connected_since is None:
                self.connected_since = time.monotonic()
                self.log.warning("database reachable again")
            elif took > self.heartbeat:
                # a stall (slow or briefly unreachable server) delayed other
                # workers' lease renewals too: recovery waits anew
                self.connected_since = time.monotonic()
                self.log.warning("step %s took %.1f s", name, took)
            return True
        except TRANSIENT as exc:
            backoff = min(max(self.heartbeat, 1.0), 5.0)
            if self.connected_since is not None:
                self.log.error("database unreachable in %s: %s", name,
                               short_error(exc))
            self.connected_since = None
            revive(self.config, self.log)  # the embedded server, if it died
            self.outage_until = time.monotonic() + backoff
        except Exception:
            self.log.exception("step %s failed", name)
        return False

    def wait(self):
        """Sleep until the next step is due, a job becomes due, the change
        stream reports or a launcher reports."""
        if self.work_now:
            return
        timeout = max(0.0, min(self.next_run.values()) - time.monotonic())
        # (a worker without a free slot claims nothing)
        wake = self.wake_in() if \
            len(self.jobs) < self.config.worker.max_jobs else None
        if wake is not None:
            timeout = min(timeout, wake + 0.001)
        filenos = list(self.envs.filenos())
        if self.watch is not None and self.watch.supported:
            filenos.append(self.watch.fileno())
        try:
            select.select(filenos, [], [], timeout)
        except InterruptedError:
            pass
        if wake == 0 or (wake is not None and self.wake_in() == 0):
            self.work_now = True

    def wake_in(self):
        """Seconds until a timer asks for a claim pass (0 once, None: no
        timer): :meth:`Claimer.seconds_to_wake` (jobs due, offered) and
        :meth:`ParallelLimit.seconds_to_probe` (a full name probed)."""
        return earliest(self.claimer.seconds_to_wake(),
                        self.parallel.seconds_to_probe(
                            self.claimer.candidates.values(), self.jobs))

    def take_hints(self):
        """Pass the change stream's hints to the claimer; after the stream
        (re)opened, scan the queue once (events may have been missed). A
        worker without a free slot asks for no hints until it has one (the
        events of meanwhile come then, in one batch)."""
        if self.watch is None:
            return
        self.watch.want(len(self.jobs) < self.config.worker.max_jobs,
                        claims=self.claimer.wants_claims())
        claimable = False
        for hint in self.watch.take():
            claimable = self.claimer.hint(hint) or claimable
        if self.watch.generation != self.watch_generation:
            self.watch_generation = self.watch.generation
            self.claimer.scan_wanted = True
        if claimable or self.claimer.scan_wanted:
            self.work_now = True

    # steps ------------------------------------------------------------------

    def work(self):
        """Claim due jobs while slots are free, and start them; the poll
        backs off while nothing is found."""
        self.work_now = False
        if self.phase != LOOP or self.maintenance["global"]:
            return
        claimed = 0
        while len(self.jobs) < self.config.worker.max_jobs:
            started = self.claim(self.config.worker.max_jobs - len(self.jobs))
            if not started:
                break
            claimed += started
            if time.monotonic() - self.renewed_at > self.heartbeat / 2:
                self.renew()  # a long claim round: the leases go on
        self.poll_interval = self.plan["work_jobs"] if claimed else min(
            self.poll_interval * 2, self.poll_max if self.watch_alive()
            else min(self.poll_max, 5.0))
        self.next_run["work_jobs"] = time.monotonic() + self.poll_interval

    def watch_alive(self):
        """True while the change stream is open (hints arrive)."""
        return self.watch is not None and self.watch.open

    def claim(self, slots):
        """Claim up to ``slots`` due jobs for this worker, in claim order
        (force, priority, FIFO), and start them; return how many started
        (0: nothing claimable now); see :mod:`core4.queue.claim`."""
        claimer = self.claimer
        claimer.resolve_unknown()
        if claimer.scan_due() or not self.watch_alive():
            claimer.scan()
        for _ in range(2):
            if self.parallel.waiting:
                self.parallel.withdraw(
                    {c.name for c in claimer.candidates.values()})
            short = self.resources.exhausted()
            capped = self.parallel.capped_names(self.jobs)
            paused = self.maintenance["projects"]
            # (an old process's events must not be taken for the new one's)
            busy = set(self.exiting) | set(self.jobs)
            candidates = claimer.next_candidates(
                capped, paused, force_only=bool(short), excluded_ids=busy)
            self.held_back.note(short, claimer.next_candidates(
                capped, paused) if short else ())
            while candidates:
                batch, candidates = self.parallel.batch_of(
                    candidates, slots, self.jobs)
                claimed = time.monotonic()  # not later than the leases
                started = self.start_admitted(self.envs.claim_primed(
                    batch, claimer.claim, self.out_dir, self.logs,
                    self.watch_settings(claimed)), claimed)
                if started:
                    return started
                # a name found at its max_parallel: skip its other jobs
                capped = self.parallel.capped_names(self.jobs)
                candidates = [c for c in candidates if c.name not in capped]
            if not claimer.scan_due():
                return 0  # (a scan would read the same page again)
            claimer.scan()  # a page, or this worker's own in it, taken
        return 0

    def start_admitted(self, docs, claimed):
        """Start the processes of the jobs ``docs`` claimed at ``claimed``
        (monotonic); return how many run. A job with a ``max_parallel``
        starts gated: its process prepares while the worker admits it
        (:meth:`ParallelLimit.admit`), and then runs or is dropped."""
        running = set()  # (not gated)
        try:
            for doc in docs:
                gated = bool(doc.get("max_parallel"))
                if self.launch(doc, claimed, gated) and not gated:
                    running.add(doc["_id"])
            limited = [doc for doc in docs if doc["_id"] in self.jobs
                       and doc["_id"] not in running]
            admitted = {doc["_id"] for doc in self.parallel.admit(limited)}
            self.claimer.share_wanted |= self.parallel.peers_stale
        except BaseException:
            # the others never ran: given back at the next check_requests
            for doc in docs:
                if doc["_id"] in self.jobs and not doc.get("max_parallel"):
                    continue  # it runs
                self.drop(doc)  # (when it was launched)
                self.claimer.uncertain[doc["locked"]["token"]] = \
                    time.monotonic()
            raise
        for doc in limited:
            if doc["_id"] not in admitted:
                self.drop(doc)
                continue
            self.jobs[doc["_id"]].launcher.gate(doc["_id"], run=True)
            self.started(doc)
        return len(running) + len(admitted)

    def launch(self, doc, claimed, gated=False):
        """Start the process of a job claimed at ``claimed`` (monotonic) in
        its environment (``gated``: it waits for :meth:`start_admitted`);
        return True if it started."""
        proc = JobProcess(doc, *job_files(self.out_dir, doc["_id"],
                                          self.logs))
        proc.claimed = claimed
        try:
            proc.launcher = self.envs.launcher_for(doc)
            self.jobs[doc["_id"]] = proc
            proc.launcher.start(doc, proc.out_path, proc.result_path,
                                proc.log_path, self.watch_settings(claimed),
                                gated=gated)
        except (EnvironmentProblem, LauncherError, OSError) as exc:
            self.jobs.pop(doc["_id"], None)
            self.log.error("cannot start job [%s]: %s", doc["_id"], exc)
            after = lifecycle.set_error(self.queue, doc, message=str(exc))
            if after is not None:
                lifecycle.log_done(after)
            return False
        if not gated:
            self.started(doc)
        return True

    def watch_settings(self, claimed):
        """The settings of the watchdog of a job claimed at ``claimed``
        (see :func:`~core4.queue.launcher.process.start_watchdog`)."""
        return {"lease_file": self.lease_file, "claimed": claimed, "grace":
                self.kill_grace, "deadline": self.lease - self.margin}

    def started(self, doc):
        """The job ``doc`` runs: its event, its line, its lease renewals."""
        self.events.add(events.job_event("start_job", doc,
                                         worker=self.identifier))
        self.log.info("job [%s] %s started (trial %d)", doc["_id"],
                      doc["name"], doc.get("trial", 1), extra=CONSOLE_ONLY)
        self.next_run["heartbeat"] = min(self.next_run.get("heartbeat", 0),
                                         self.renewed_at + self.heartbeat / 2)

    def drop(self, doc):
        """The gated job ``doc`` does not run here (``admit`` gave it back):
        its process exits; it is not claimed here again before then."""
        proc = self.jobs.pop(doc["_id"], None)
        if proc is not None:
            self.exiting[doc["_id"]] = proc
            proc.launcher.gate(doc["_id"], run=False)

    def renew(self):
        """Renew this worker's heartbeat and the leases of its jobs; then
        tell the jobs' watchdogs (the lease file)."""
        began = time.monotonic()
        at = now()
        self.queue.sys.worker.update_one(
            {"_id": self.identifier},
            {"$set": {"heartbeat": at, "phase": self.phase,
                      "jobs": len(self.jobs), "claims": self.claimer.counts()}})
        if self.jobs:
            # (its own only: a claim whose answer was lost expires)
            self.queue.sys.queue.update_many(
                {"_id": {"$in": list(self.jobs)}, "state": states.RUNNING,
                 "locked.worker": self.identifier},
                {"$set": {"locked.heartbeat": at}})
        write_renewal(self.lease_file, began)
        self.renewed_at = began
        if self.claimer.share_out() and self.parallel.limits:
            self.work_now = True  # (the shares changed: claim with them)

    def check(self):
        """Process halt, maintenance, kill and removal requests."""
        halt_at, self.maintenance, _ = self.queue.control()
        if self.phase == LOOP and halt_at is not None \
                and halt_at >= self.started_at:
            self.begin_stop("halt requested")
        if not self.jobs and not self.claimer.uncertain:
            return
        current = {doc["_id"]: doc for doc in self.queue.sys.queue.find(
            {"locked.worker": self.identifier, "state": states.RUNNING},
            {"killed_at": 1, "locked": 1, "last_error": 1})}
        if self.claimer.uncertain:
            for job_id in self.claimer.give_back_uncertain(
                    current.values(), set(self.jobs), self.lease):
                self.log.warning("job [%s] claimed while the connection "
                                 "broke: given back", job_id)
        enforce(self.queue, self.jobs, current, self.kill_grace)

    def publish_output(self):
        """Store what the running jobs printed so far (only what grew)."""
        for proc in list(self.jobs.values()):
            publish_output(self.queue, proc, self.config.worker.stdout_max)

    def flag(self):
        """Non-stop and zombie flags; inactivate expired deferred jobs;
        release jobs whose dependencies completed; remove the
        ``max_parallel`` holders of dead workers."""
        self.dependents_waiting = bool(
            dependency.resolve_waiting(self.queue, self.log))
        if self.jobs:
            docs = list(self.queue.sys.queue.find(
                {"locked.worker": self.identifier,
                 "state": states.RUNNING}))
            recovery.flag_running(self.queue, docs, self.log)
        self.parallel.sweep()  # holders left by dead workers
        count = recovery.inactivate_deferred(self.queue)
        if count:
            self.log.warning("%d deferred job(s) became inactive", count)

    def recover(self):
        """Recover jobs whose lease expired (their worker is gone)."""
        grace = self.lease + self.margin
        if self.connected_since is None or \
                time.monotonic() - self.connected_since < grace:
            return  # after an outage or stall, give live workers time
        for doc in recovery.recover_lost(
                self.queue, now() - seconds(grace), self.log,
                skip=set(self.jobs)):
            self.events.add(events.job_event("recover_job", doc))

    # job processes ----------------------------------------------------------

    def handle_events(self):
        """Record started, done and exited job processes; record how each
        finished job ended and free its slot."""
        for event in self.envs.poll():
            proc = self.jobs.get(event.job_id)
            if proc is None:
                if isinstance(event, Exited) and \
                        event.job_id in self.exiting:
                    dropped = self.exiting.pop(event.job_id)
                    if dropped is not None:
                        dropped.remove_files()
                    self.work_now = True  # it may be claimed again
                continue
            if isinstance(event, Started):
                proc.started(event.pid)
            elif isinstance(event, Done):
                proc.done = True
            else:
                proc.exit_event = event
        if time.monotonic() < self.outage_until:
            return
        # a job whose process reported done is recorded at once: its process
        # is only exiting (it keeps no slot; the job's id waits in exiting)
        ready = [p for p in self.jobs.values() if p.ready()]
        if ready and self.guarded("finish_jobs",
                                  lambda: self.finisher.finish(ready)):
            for proc in ready:
                self.jobs.pop(proc.doc["_id"], None)
                if proc.exit_event is None:  # (it reported done)
                    self.exiting[proc.doc["_id"]] = None
            self.guarded("release", lambda: self.parallel.release(
                [proc.doc for proc in ready]))
            self.work_now = True  # slots are free: claim now
            if self.dependents_waiting:  # they may wait for these jobs
                self.next_run["flag_jobs"] = min(
                    self.next_run.get("flag_jobs", 0),
                    time.monotonic() + 1.0)
        if self.finisher.completed:
            self.guarded("journal", self.finisher.journal)

    def forward_logs(self):
        """Forward new log records of the running jobs to sys_log."""
        if self.logs is None or time.monotonic() < self.outage_until:
            return
        for proc in self.jobs.values():
            if proc.log_path:
                self.logs.read(proc.log_path)
        self.guarded("forward_logs", self.logs.flush)

    # stopping ---------------------------------------------------------------

    def begin_stop(self, reason, grace=None):
        """Stop claiming; let running jobs finish within the grace period."""
        if self.phase != LOOP:
            return
        self.log.info("stopping: %s", reason)
        self.phase = STOPPING
        grace = self.config.worker.halt_grace if grace is None else grace
        self.stop_deadline = time.monotonic() + grace

    def _on_signal(self, signum, frame):
        self.signals += 1
        if self.signals == 1:
            self.begin_stop("signal %d" % signum)
        else:
            self.log.info("stopping at once: second signal %d", signum)
            self.begin_stop("signal %d" % signum, grace=0)
            self.stop_deadline = 0
            self.kill_grace = 0

    def shutdown(self):
        """Wait for killed jobs to end, unregister, clean up."""
        self.phase = SHUTDOWN
        deadline = time.monotonic() + self.config.worker.kill_grace + 5
        while self.jobs and time.monotonic() < deadline:
            terminate_all(self.jobs, "stopped by %s at shutdown"
                          % self.identifier, self.kill_grace)
            self.handle_events()
            time.sleep(0.05)
        if self.finisher is not None and self.finisher.completed:
            self.guarded("journal", self.finisher.journal)
        if self.envs is not None:
            self.envs.close()
        if self.watch is not None:
            self.watch.close()
        try:
            # the events and log records of the last jobs, before leaving
            if self.events is not None:
                self.events.flush()
            self.forward_logs()
        except pymongo.errors.PyMongoError as exc:
            self.log.error("cannot write the last events: %s", exc)
        try:
            unregister(self.queue.sys, self.identifier)
        except pymongo.errors.PyMongoError as exc:
            self.log.error("cannot unregister: %s", exc)
        if self.work_dir is not None:
            self.work_dir.remove()
        self.phase = EXIT
        self.log.info("worker [%s] stopped", self.identifier)
        logging.shutdown()
