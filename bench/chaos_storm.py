"""The storm (issue 12, proof of reliability): thousands of short jobs on
real workers while workers and the database server are killed::

    .venv/bin/python bench/chaos.py --modes storm [--jobs 5000]
        [--seconds 900] [--workers 3] [--slots 8] [--heartbeat 2]
        [--kill-every 2,5] [--db-every 20] [--db-down 1,3] [--settle 60]
        [--json out.json] [--keep]

N jobs (``bench.chaos_jobs.StormJob``, enqueued while the storm runs) go
to ``--workers`` workers (fork mode, ``--slots`` jobs each) on a private
NX-27017 server. Each job sleeps a random short time (a share ``--long``
of them several seconds, longer than a lease) and raises with probability
``--fail``; with ``attempts=3`` and ``error_time=1`` a job that raised
three times ends in ``error``, an expected final state. Every execution
appends ``start``/``end`` records to one O_APPEND file and holds a flock
of its job while its body runs (bench/chaos_jobs.py).

Meanwhile, until every job is final or ``--seconds`` passed: every
``--kill-every`` s (random in the range) a random worker gets SIGKILL (its
main process; its launcher must take its job processes down) and a new
worker replaces it; every ``--db-every`` s (+-20 %) the database server
gets SIGKILL and is started again ``--db-down`` s later on the same data
directory and port (:func:`core4.mongo.embedded.ensure_server`); the
workers reconnect by themselves. Then the jobs may settle (no chaos) until
none has reached a final state for ``--settle`` s.

Printed: final states; lost jobs (an enqueued id in neither sys_queue nor
sys_journal); overlaps (an execution found its job's lock held, or started
before the previous one ended or was last seen alive); stuck jobs (not
final: pending, running, failed); doubled executions (a trial that ran
twice, or an execution after the job's final state); unexpected final
states (anything but complete, or error after the planned failures);
re-executions by cause; recovery after a worker kill (the kill to the next
start of each job the killed worker ran, p50/p99/max) and after a
database restart (the restart to the next start and the next completion).
Worker-kill samples count against the target only when clean: no database
outage near them and another worker in its loop for long enough to recover
(a new worker recovers nobody for ``lease + margin``).

Targets: 0 lost, 0 overlaps, 0 stuck, 0 doubled, 0 unexpected: any miss
makes the exit status 1. Recovery after a worker kill, p99 of the clean
samples <= 2 x heartbeat + recover_jobs interval + margin + 1 s (claim and
start): printed PASS/FAIL, not part of the exit status.
"""

import argparse
import datetime
import os
import random
import signal
import threading
import time

from bench.chaos import (Worker, log_errors, percentile, wait_until,
                         worker_env)
from bench.chaos_jobs import PLANNED, StormWitness, alive_since

JOB = "bench.chaos_jobs.StormJob"
ATTEMPTS = 3
ERROR_TIME = 1.0
#: losses a job may take before it ends in error: high, so that a job's
#: error means its planned failures (a loss is not the job's fault)
MAX_LOST = 10
#: seconds a killed worker's job process may outlive the kill
ORPHAN_AFTER = 2.5
#: seconds to claim and start a recovered job (part of the target)
START_SLACK = 1.0
#: ERROR records the storm causes by design
EXPECTED = ("recovered job", "lost its lease before its outcome",
            "database unreachable", PLANNED, "StormJob error after",
            "StormJob failed after", "cannot write the last events")
#: (no projection of sub-fields: NX-27017 returns them flattened)
FIELDS = {"state": 1, "trial": 1, "lost": 1, "attempts_left": 1,
          "finished_at": 1, "last_error": 1, "locked": 1}


def span(text):
    """``"A,B"`` -> ``(A, B)`` floats (``"A"`` -> ``(A, A)``)."""
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def add_arguments(parser):
    """The storm's options, on the parser of bench/chaos.py."""
    group = parser.add_argument_group("storm (--modes storm)")
    group.add_argument("--seconds", type=float, default=900.0,
                       help="longest storm (s); then the jobs settle")
    group.add_argument("--slots", type=int, default=8,
                       help="worker.max_jobs of each worker")
    group.add_argument("--sleep", type=span, default=(0.02, 0.4),
                       metavar="MIN,MAX", help="a job's sleep (s)")
    group.add_argument("--long", type=float, default=0.01,
                       help="share of jobs that sleep --long-sleep")
    group.add_argument("--long-sleep", type=span, default=(3.0, 8.0),
                       metavar="MIN,MAX")
    group.add_argument("--fail", type=float, default=0.2,
                       help="probability that an execution raises")
    group.add_argument("--kill-every", type=span, default=(2.0, 5.0),
                       metavar="MIN,MAX", help="seconds between worker kills")
    group.add_argument("--db-every", type=float, default=20.0,
                       help="seconds between database kills (+-20 %%)")
    group.add_argument("--db-down", type=span, default=(1.0, 3.0),
                       metavar="MIN,MAX", help="seconds the server is down")
    group.add_argument("--settle", type=float, default=60.0,
                       help="after the storm: seconds without a job "
                       "reaching a final state (3 x that in all) until the "
                       "rest is stuck")


def epoch(value):
    """A datetime of core4 (UTC; naive ones are UTC) as epoch seconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


class StormRun:
    """The storm: its workers, jobs, kills, restarts and figures."""

    def __init__(self, args, server, home, number=0):
        from core4.config import reset_config
        from core4.queue.queue import CoreQueue
        self.args, self.server, self.home = args, server, home
        self.lease, self.margin = 2 * args.heartbeat, args.margin
        env_args = argparse.Namespace(**dict(vars(args),
                                             max_jobs=args.slots))
        self.env = worker_env(env_args, "chaos%d_storm" % number,
                              server["url"])
        self.recover_every = float(self.env[
            "CORE4_OPTION_worker__execution_plan__recover_jobs"].split()[-1])
        self.target = self.lease + self.recover_every + self.margin + \
            START_SLACK
        os.environ.update(self.env)
        reset_config()
        self.queue = CoreQueue()
        self.sys = self.queue.sys
        self.witness_dir = os.path.join(home, "storm%d" % number)
        os.makedirs(os.path.join(self.witness_dir, "locks"))
        self.witness = StormWitness(self.witness_dir)
        self.workers, self.dead, self.count = [], [], 0
        self.loop_at = {}           # worker name -> its loop began (epoch)
        self.ids, self.enqueued = [], threading.Event()
        self.kills, self.outages, self.notes = [], [], []
        self.down = None
        self.stopping = False   # ends the enqueue thread

    # workers ------------------------------------------------------------

    def start_worker(self):
        """Start one more worker (it registers by itself)."""
        self.count += 1
        self.workers.append(Worker("storm%d" % self.count, self.env,
                                   self.home))

    def watch_workers(self):
        """Note when each worker's loop began (its log's ``started``
        line); replace workers that died on their own."""
        for worker in list(self.workers):
            if worker.name not in self.loop_at:
                with open(worker.log_path, errors="replace") as handle:
                    for line in handle:
                        if "] worker [" in line and "started (pid" in line:
                            self.loop_at[worker.name] = time.mktime(
                                time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"
                                              )) + float(line[20:23]) / 1000
                            break
            if worker.proc.poll() is not None:
                self.notes.append("worker %s exited by itself (%s): %s" % (
                    worker.name, worker.proc.returncode,
                    worker.tail(300).strip().split("\n")[-1]))
                self.workers.remove(worker)
                self.dead.append(worker)
                self.start_worker()

    def kill_worker(self):
        """SIGKILL a random worker's main process, note the executions its
        launchers ran, start another worker."""
        victim = random.choice(self.workers)
        launchers = victim.launchers()
        parents = {victim.pid, *launchers}
        held = {pid: job for pid, (job, ppid) in self.witness.live().items()
                if ppid in parents}
        at = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(30)
        self.workers.remove(victim)
        self.dead.append(victim)
        self.kills.append({"at": at, "victim": victim.name, "held": held,
                           "launchers": launchers,
                           "others": [w.name for w in self.workers]})
        self.start_worker()

    # the database server ------------------------------------------------

    def kill_server(self):
        """SIGKILL the database server and reap it."""
        pid = self.server["pid"]
        self.down = {"at": time.time(), "until": time.time() + random.uniform(
            *self.args.db_down)}
        os.kill(pid, signal.SIGKILL)
        try:  # a child of this process (ensure_server started it)
            os.waitpid(pid, 0)
        except ChildProcessError:
            wait_until(lambda: not alive_since(pid, 0), 10, "the server")

    def restart_server(self):
        """Start the server again on its data directory and port."""
        import json
        from core4.mongo import embedded
        embedded.ensure_server(self.server["dir"])
        with open(os.path.join(self.server["dir"], "server.json")) as handle:
            self.server["pid"] = json.load(handle)["pid"]
        self.down["up"] = time.time()
        # (no job pending, as at the end of the run: no sample; the last
        # few jobs may wait for their retry or run for seconds)
        from core4.mongo.compat import count
        self.down["pending"] = count(self.sys.queue, {"state": "pending"})
        self.outages.append(self.down)
        self.down = None

    # jobs ---------------------------------------------------------------

    def enqueue_all(self):
        """Enqueue the jobs (in a thread, while the storm runs); an enqueue
        cut off by the outage is tried again, and one that had landed is
        found by its key."""
        from core4.error import CoreJobExists
        from core4.mongo.connection import TRANSIENT
        low, high = self.args.sleep
        for n in range(self.args.jobs):
            key = "s%05d" % n
            sleep = random.uniform(*(self.args.long_sleep if random.random()
                                     < self.args.long else (low, high)))
            while not self.stopping:
                try:
                    self.ids.append(self.queue.enqueue(
                        JOB, witness=self.witness_dir, key=key,
                        sleep=round(sleep, 3), fail=self.args.fail,
                        attempts=ATTEMPTS, error_time=ERROR_TIME,
                        max_lost=MAX_LOST)._id)
                    break
                except CoreJobExists:
                    doc = self.find_key(key)
                    if doc is not None:
                        self.ids.append(doc["_id"])
                        break
                except TRANSIENT:
                    time.sleep(0.2)
                except Exception as exc:  # noqa: BLE001 - in the report
                    self.notes.append("enqueue of %s failed: %r" % (key, exc))
                    self.stopping = True
        self.enqueued.set()

    def find_key(self, key):
        """The job of ``key`` in the queue or else the journal, or None."""
        from core4.mongo import retrying
        for coll in (self.sys.queue, self.sys.journal):
            doc = retrying(coll.find_one, {"args.key": key}, {"_id": 1},
                           timeout=60)
            if doc is not None:
                return doc
        return None

    def finals(self):
        """How many jobs are in a final state (journaled or error)."""
        from core4.mongo.compat import count  # (count_documents reads all)
        return count(self.sys.journal) + \
            count(self.sys.queue, {"state": "error"})

    # the run ------------------------------------------------------------

    def run(self):
        """Run the storm, let the jobs settle; return the figures."""
        began = time.time()
        try:
            for _ in range(self.args.workers):
                self.start_worker()
            wait_until(lambda: self.watch_workers() or len(self.loop_at)
                       >= self.args.workers, 120, "the workers to start")
            self.witness.start()
            threading.Thread(target=self.enqueue_all, daemon=True).start()
            self.storm()
            storm_end = time.time()
            settled = self.settle()
            docs = {}
            for coll in (self.sys.journal, self.sys.queue):
                docs.update((d["_id"], d) for d in coll.find({}, FIELDS))
            time.sleep(1.0)  # the last records and exits
            self.witness.poll()
            result = self.figures(docs)
            result.update(seconds=round(storm_end - began, 1),
                          settle=round(settled - storm_end, 1))
            return result
        finally:
            self.cleanup()

    def storm(self):
        """Kill workers and the server until every job is final or
        ``--seconds`` passed; the server runs again at the end."""
        args, start = self.args, time.time()
        next_kill = start + random.uniform(*args.kill_every)
        next_db = start + args.db_every * random.uniform(0.5, 1.0)
        next_check = start + 2.0
        while time.time() < start + args.seconds:
            self.watch_workers()
            if self.down and time.time() >= self.down["until"]:
                self.restart_server()
                next_db = time.time() + args.db_every * random.uniform(
                    0.8, 1.2)
            elif not self.down and time.time() >= next_db:
                self.kill_server()
            if time.time() >= next_kill:
                self.kill_worker()
                next_kill = time.time() + random.uniform(*args.kill_every)
            if not self.down and time.time() >= next_check:
                next_check = time.time() + 2.0
                if self.enqueued.is_set() and \
                        self.finals() >= len(self.ids):
                    break
            time.sleep(0.05)
        if self.down:
            time.sleep(max(0.0, self.down["until"] - time.time()))
            self.restart_server()

    def settle(self):
        """Wait until every job is final, or none got final for
        ``--settle`` seconds (3 x ``--settle`` at most); return when it
        ended."""
        last, changed = -1, time.time()
        end_by = changed + 3 * self.args.settle
        while time.time() - changed < self.args.settle and \
                time.time() < end_by:
            self.watch_workers()
            count = self.finals()
            if self.enqueued.is_set() and count >= len(self.ids):
                break
            if count != last:
                last, changed = count, time.time()
            time.sleep(1.0)
        return time.time()

    def cleanup(self):
        """Halt and kill the workers and what is left of their jobs."""
        self.witness.running, self.stopping = False, True
        try:
            if self.down:
                self.restart_server()
            self.queue.halt()
            wait_until(lambda: all(w.proc.poll() is not None
                                   for w in self.workers), 30, "halt")
        except Exception:  # noqa: BLE001 - killed below anyway
            pass
        for worker in self.workers + self.dead:
            worker.stop()
        for pid, _ in self.witness.live().items():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    # figures ------------------------------------------------------------

    def figures(self, docs):
        """The outcome of the storm (a dict; see :func:`report`)."""
        ids, w = self.ids, self.witness
        states = {}
        for doc in docs.values():
            states[doc["state"]] = states.get(doc["state"], 0) + 1
        errors = [i for i in ids if i in docs and docs[i]["state"] == "error"]
        planned = [i for i in errors if PLANNED in (
            docs[i].get("last_error") or {}).get("exception", "")]
        final = {"complete", "error"}
        flock, interval = w.overlaps()
        execs = w.execs
        by_trial, after_final, causes = {}, [], dict.fromkeys(
            ("raise", "loss", "body_done"), 0)
        for job, runs in w.by_job.items():
            runs = sorted(runs, key=lambda e: e.start)
            for a, b in zip(runs, runs[1:]):
                causes["loss" if a.end is None else "raise"
                       if a.how == "raise" else "body_done"] += 1
            for e in runs:
                by_trial.setdefault((job, e.trial), []).append(e.pid)
            doc = docs.get(_oid(job))
            if doc and doc["state"] in final and doc.get("finished_at"):
                done = epoch(doc["finished_at"])
                after_final += [(job, e.pid, round(e.start - done, 3))
                                for e in runs if e.start > done + 0.05]
        res = {
            "mode": "storm", "jobs": len(ids), "states": states,
            "kills": len(self.kills), "db_restarts": len(self.outages),
            "lost": [str(i) for i in ids if i not in docs],
            "stuck": [(str(i), docs[i]["state"], docs[i].get("trial"),
                       (docs[i].get("locked") or {}).get("worker"))
                      for i in ids if i in docs
                      and docs[i]["state"] not in final],
            "unexpected": [(str(i), (docs[i].get("last_error") or {}).get(
                "exception", "")[:160]) for i in errors if i not in planned],
            "errors_planned": len(planned),
            "extra_jobs": len(set(docs) - set(ids)),
            "flock_overlaps": flock, "interval_overlaps": interval,
            "overlaps": len(flock) + len(interval),
            "doubled": [("trial", job, trial, pids) for (job, trial), pids
                        in by_trial.items() if len(pids) > 1] + [
                ("after_final",) + a for a in after_final],
            "executions": len(execs), "started_jobs": len(w.by_job),
            "reexecutions": len(execs) - len(w.by_job), "causes": causes,
            "trials": sum(d.get("trial") or 0 for d in docs.values()),
            "losses": sum(d.get("lost") or 0 for d in docs.values()),
            "notes": self.notes,
        }
        res.update(self.recovery())
        # the launchers of a killed worker follow it (they kill their jobs)
        res["stray_launchers"] = [
            (k["victim"], pid) for k in self.kills for pid in k["launchers"]
            if alive_since(pid, k["at"])]
        res["logs"] = [wk.log_path for wk in self.workers + self.dead]
        res["log_errors"] = log_errors(res["logs"], EXPECTED)
        return res

    def recovery(self):
        """Recovery figures of the worker kills and database restarts."""
        samples, clean, orphans, gone, never = [], [], [], [], []
        kills = []
        for kill in self.kills:
            at = kill["at"]
            ok = self.mature_other(kill) and not self.near_outage(at)
            kills.append([round(at, 2), kill["victim"], ok, []])
            for pid, job in kill["held"].items():
                runs = [e for e in self.witness.by_job.get(job, ())
                        if e.pid == pid]
                end = runs[0].gone_at() if runs else None
                if end is not None:
                    gone.append(round(max(0.0, end - at), 3))
                if end is None or end - at > ORPHAN_AFTER:
                    orphans.append((job, pid, kill["victim"]))
                nxt = self.witness.next_start(job, at)
                if nxt is None:
                    never.append((job, kill["victim"]))
                    continue
                samples.append(round(nxt - at, 3))
                kills[-1][-1].append(samples[-1])
                if ok:
                    clean.append(round(nxt - at, 3))
        db_start, db_complete = [], []
        for out in self.outages:
            first = self.witness.first_start(out["up"])
            if first is not None and out["pending"]:
                db_start.append(round(first - out["up"], 3))
            doc = self.sys.journal.find_one(
                {"finished_at": {"$gt": datetime.datetime.fromtimestamp(
                    out["up"], datetime.timezone.utc)}},
                {"finished_at": 1}, sort=[("finished_at", 1)])
            if doc is not None and out["pending"]:
                db_complete.append(round(epoch(doc["finished_at"]) -
                                         out["up"], 3))
        return {"recovery": samples, "recovery_clean": clean,
                "orphans": orphans, "gone": gone, "never_again": never,
                "db_next_start": db_start, "db_next_complete": db_complete,
                "db_down": [round(o["up"] - o["at"], 2)
                            for o in self.outages],
                "target": round(self.target, 2), "kill_log": kills,
                "outage_log": [[round(o[k], 2) for k in ("at", "up")]
                               for o in self.outages]}

    def mature_other(self, kill):
        """True if another worker, in its loop since before the victim's
        last lease renewal, lived on until the target passed."""
        at = kill["at"]
        for name in kill["others"]:
            began = self.loop_at.get(name)
            died = next((k["at"] for k in self.kills
                         if k["victim"] == name), float("inf"))
            if began is not None and began <= at - self.args.heartbeat / 2 \
                    and died > at + self.target:
                return True
        return False

    def near_outage(self, at):
        """True if a database outage delays the recovery of a kill at
        ``at``: it began before the target passed, and the workers were
        back (the server's restart + a heartbeat to reconnect) only after
        the kill; after an outage a worker waits ``lease + margin`` before
        it recovers anything (docs/concepts.rst)."""
        return any(o["at"] <= at + self.target and
                   o["up"] + self.args.heartbeat >= at
                   for o in self.outages)


def _oid(text):
    from bson import ObjectId
    return ObjectId(text)


def stats(values):
    """``p50/p99/max (n)`` of ``values`` as text."""
    if not values:
        return "- (0)"
    return "p50 %.2f s, p99 %.2f s, max %.2f s (%d)" % (
        percentile(values, 0.5), percentile(values, 0.99), max(values),
        len(values))


DETAILS = ("failed", "lost", "stuck", "unexpected", "flock_overlaps",
           "interval_overlaps", "doubled", "never_again", "orphans",
           "stray_launchers", "notes", "log_errors")


def report(res, args):
    """Print the storm's figures and verdicts; return True if there was
    no loss, overlap, stuck, doubled or unexpectedly final job."""
    print("\nstorm: %d jobs, %d workers x %d slots, heartbeat %.1f s "
          "(lease %.1f s, margin %.1f s)" % (
              args.jobs, args.workers, args.slots, args.heartbeat,
              2 * args.heartbeat, args.margin))
    if "failed" in res:
        print("storm FAILED: %s" % res["failed"])
        return False
    print("  %.0f s of storm, %.0f s to settle; %d worker kills, %d "
          "database restarts (down %s s)" % (
              res["seconds"], res["settle"], res["kills"],
              res["db_restarts"], "-".join("%.1f" % f for f in (
                  min(res["db_down"]), max(res["db_down"])))
              if res["db_down"] else "-"))
    print("  final states %s; error after its attempts %d" % (
        res["states"], res["errors_planned"]))
    c = res["causes"]
    print("  executions %d of %d jobs: %d re-executions (%d after a raise, "
          "%d after a loss, %d after a body that ended); trials %d, losses "
          "%d" % (res["executions"], res["started_jobs"],
                  res["reexecutions"], c["raise"], c["loss"],
                  c["body_done"], res["trials"], res["losses"]))
    print("  job processes gone after a worker kill: %s; orphans (> %.1f "
          "s) %d" % (stats(res["gone"]), ORPHAN_AFTER, len(res["orphans"])))
    print("  recovery after a worker kill, all: %s" % stats(res["recovery"]))
    print("  database restart -> next start (jobs pending): %s" % stats(
        res["db_next_start"]))
    print("  database restart -> next complete (jobs pending): %s" % stats(
        res["db_next_complete"]))
    for name in DETAILS:
        if res.get(name):
            value = res[name]
            shown = value[:10] if isinstance(value, list) else value
            print("  %s (%d): %s" % (name, len(value), shown))
    ok = res["jobs"] == args.jobs  # else the enqueue failed (see notes)
    for name in ("lost", "overlaps", "stuck", "doubled", "unexpected"):
        count = res[name] if isinstance(res[name], int) else len(res[name])
        ok &= count == 0
        print("%-11s %4d    target 0    %s" % (name, count,
                                               "PASS" if not count else "FAIL"))
    clean = res["recovery_clean"]
    p99 = percentile(clean, 0.99) if clean else float("inf")
    res["recovery_pass"] = p99 <= res["target"]
    print("recovery    after a worker kill, clean samples: %s\n"
          "            target p99 <= 2 x heartbeat + recover_jobs + margin "
          "+ %.0f s = %.1f s    %s" % (
              stats(clean), START_SLACK, res["target"],
              "PASS" if res["recovery_pass"] else "FAIL"))
    return ok
