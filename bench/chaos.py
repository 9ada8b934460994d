"""Never twice at once (issue 18): real workers, jobs longer than a lease,
and the worst that can happen to a worker, measured::

    .venv/bin/python bench/chaos.py [--modes session,stop,cutoff,launcher,
        worker] [--workers 3] [--jobs 12] [--heartbeat 2] [--duration S]
        [--rounds 2] [--json out.json] [--keep]

Per mode: N workers (fork mode) on a private NX-27017 server in a temporary
core4 home run M jobs of ``--duration`` s (default 2 leases + 6 s; lease =
2 x heartbeat, margin = heartbeat / 2); ``--rounds`` times, mid-job, the
worker running the most jobs (the victim) is disrupted:

``session``   SIGKILL of its process group (worker and launcher)
``stop``      SIGSTOP for lease + 5 s, then SIGCONT
``cutoff``    SIGSTOP of the database server for lease + 5 s (all workers
              are cut off, every running job is affected), then SIGCONT
``launcher``  SIGKILL of its launcher process(es) only
``worker``    SIGKILL of its main process only

Killed workers are replaced. Each job (bench/chaos_jobs.py) holds a flock
per job while it runs and logs starts and ends with pid and time. Printed
per mode and in total: overlaps (an execution found the lock held, or
started before the previous one ended or was last seen alive), orphans
(the victim's job processes alive 2.5 s after a kill, or lease + margin
after a SIGSTOP), lost jobs (not ``complete`` in time), errors,
executions, trials and losses recorded, spurious losses (more than the job
was disrupted), ``gone`` (the longest time from the disruption until an
affected job process was gone) and recovery: the disruption (for cutoff:
the server's SIGCONT) to the affected job's next start, p50/p99/max.

Targets: 0 overlaps, 0 orphans, 0 lost, 0 errors, recovery p99 <= lease +
margin + 2 s. The exit status is 0 if all are met.

``--modes storm`` (not among the default modes) runs the storm of issue 12
instead: thousands of short jobs while random workers and the database
server are killed again and again; see bench/chaos_storm.py.
"""

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.chaos_jobs import Witness, alive  # noqa: E402

JOB = "bench.chaos_jobs.WitnessJob"
MODES = ("session", "stop", "cutoff", "launcher", "worker")
#: the default ``--jobs`` of the kill modes and of the storm
JOBS, STORM_JOBS = 12, 5000
#: seconds after a kill at which a job process of the victim is an orphan
ORPHAN_AFTER = 2.5
#: seconds a stop (of a worker or of the server) outlasts the lease
HOLD_EXTRA = 5.0


def wait_until(predicate, timeout, what, interval=0.1):
    """Poll ``predicate`` until it returns a true value and return it;
    raise RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (
                timeout, what))
        time.sleep(interval)


def percentile(values, share):
    """The ``share`` (0..1) percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1,
                       int(math.ceil(share * len(ordered))) - 1)]


class Worker:
    """A ``coco --worker NAME`` process in a session of its own."""

    def __init__(self, name, env, log_dir):
        self.name = name
        self.log_path = os.path.join(log_dir, "worker-%s.log" % name)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "core4.script.coco", "--worker", name,
                 "--start-method", "fork"], env=env, cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def launchers(self):
        """The worker's launcher processes (its direct children)."""
        found = []
        try:
            for child in psutil.Process(self.pid).children():
                if "core4.queue.launcher" in " ".join(child.cmdline()):
                    found.append(child.pid)
        except psutil.Error:
            pass
        return found

    def parents(self):
        """Pids that start this worker's job processes."""
        return {self.pid, *self.launchers()}

    def tail(self, chars=3000):
        """The end of the worker's log."""
        with open(self.log_path, "rb") as handle:
            return handle.read()[-chars:].decode("utf-8", "replace")

    def stop(self):
        """Kill the worker's session (worker and launcher) and reap it."""
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except OSError:
                pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


def worker_env(args, database, url):
    """The environment of this process and its workers for one mode."""
    hb = args.heartbeat
    env = dict(os.environ)
    env.update({
        "CORE4_OPTION_DEFAULT__mongo_url": url,
        "CORE4_OPTION_DEFAULT__mongo_database": database,
        "CORE4_OPTION_daemon__heartbeat": "!!float %s" % hb,
        "CORE4_OPTION_daemon__alive_timeout": "!!float %s" % (5 * hb),
        "CORE4_OPTION_worker__kill_grace": "!!float 1",
        "CORE4_OPTION_worker__halt_grace": "!!float 10",
        "CORE4_OPTION_worker__max_cpu": "!!int 100",
        "CORE4_OPTION_worker__max_jobs": "!!int %d" % args.max_jobs,
        "CORE4_OPTION_job__max_parallel": "!!int %d" % (4 * args.jobs),
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    })
    env.update(("CORE4_OPTION_worker__execution_plan__" + step,
                "!!float %s" % every) for step, every in (
        ("check_requests", 0.2), ("flag_jobs", 0.3), ("recover_jobs", 0.3),
        ("collect_stats", 0.5), ("publish_output", 0.2)))
    return env


class ModeRun:
    """One kill mode: its workers, jobs, disruptions and figures."""

    def __init__(self, mode, args, server, home, number=0):
        from core4.config import reset_config
        from core4.queue.queue import CoreQueue
        self.mode, self.args, self.server, self.home = mode, args, server, home
        self.lease, self.margin = 2 * args.heartbeat, args.margin
        self.env = worker_env(args, "chaos%d_%s" % (number, mode),
                              server["url"])
        os.environ.update(self.env)
        reset_config()
        self.queue = CoreQueue()
        self.sys = self.queue.sys
        self.witness_dir = os.path.join(home, "witness%d" % number, mode)
        os.makedirs(self.witness_dir)
        self.keys = ["j%02d" % i for i in range(args.jobs)]
        self.witness = Witness(self.witness_dir, self.keys)
        self.workers, self.dead, self.count = [], [], 0
        self.affected = dict.fromkeys(self.keys, 0)
        self.result = {"mode": mode, "disruptions": [], "orphans": [],
                       "recovery": [], "gone": [], "stray_launchers": [],
                       "notes": []}

    def start_worker(self):
        """Start one more worker and wait until its loop runs."""
        self.count += 1
        worker = Worker("%s%d" % (self.mode, self.count), self.env,
                        self.home)
        self.workers.append(worker)
        return worker

    def registered(self, worker):
        """Wait until ``worker`` runs its loop."""
        def up():
            if worker.proc.poll() is not None:
                raise RuntimeError("worker %s exited\n%s" % (
                    worker.name, worker.tail()))
            return self.sys.worker.find_one(
                {"_id": {"$regex": "^%s@" % worker.name}, "phase": "loop"})
        wait_until(up, 120, "worker %s to register" % worker.name)

    def run(self):
        """Run the mode; return its figures (a dict)."""
        try:
            for _ in range(self.args.workers):
                self.start_worker()
            for worker in list(self.workers):
                self.registered(worker)
            ids = [self.queue.enqueue(
                JOB, witness=self.witness_dir, key=key,
                seconds=self.args.duration, attempts=1, error_time=600,
                max_lost=max(3, self.args.rounds + 1))._id
                for key in self.keys]
            self.witness.start()
            wait_until(lambda: all(self.witness.starts(k) for k in self.keys),
                       120, "every job to start")
            for rnd in range(self.args.rounds):
                # at a random phase of the workers' renewals, mid-job
                time.sleep(random.uniform(1.0, 1.0 + self.args.heartbeat))
                self.disrupt(rnd)
            self.result["died"] = [w.name for w in self.workers
                                   if w.proc.poll() is not None]
            # every job ends, within a deadline
            end_by = time.monotonic() + self.args.duration * (
                self.args.rounds + 2) + 120
            docs = {}
            while time.monotonic() < end_by:
                docs = {d["args"]["key"]: d for d in self.sys.journal.find(
                    {"_id": {"$in": ids}})}
                if len(docs) == len(self.keys):
                    break
                time.sleep(0.5)
            self.result["logs"] = [w.log_path
                                   for w in self.workers + self.dead]
            self.result["log_errors"] = log_errors(self.result["logs"])
            summarize(self.result, self.keys, docs, self.witness,
                      self.affected)
            return self.result
        finally:
            self.cleanup()

    def victim(self, live):
        """The worker running the most of the ``live`` executions, and
        those executions (all of them for ``cutoff``)."""
        if self.mode == "cutoff":
            return None, live
        counts = [(sum(1 for _, pp in live.values() if pp in w.parents()),
                   i) for i, w in enumerate(self.workers)]
        victim = self.workers[max(counts)[1]]
        parents = victim.parents()
        return victim, {p: v for p, v in live.items() if v[1] in parents}

    def disrupt(self, rnd):
        """Round ``rnd``: disrupt the victim, look for orphans, end the
        disruption and measure each affected job's recovery."""
        victim, mine = self.victim(self.witness.live())
        if not mine:
            self.result["notes"].append("round %d: no job running" % rnd)
            return
        launchers = victim.launchers() if victim else []
        at = time.time()
        if self.mode == "session":
            os.killpg(victim.pid, signal.SIGKILL)
        elif self.mode == "worker":
            victim.proc.send_signal(signal.SIGKILL)
        elif self.mode == "launcher":
            for pid in launchers:
                os.kill(pid, signal.SIGKILL)
        elif self.mode == "stop":
            victim.proc.send_signal(signal.SIGSTOP)
        else:
            self.server["paused"] = True
            os.kill(self.server["pid"], signal.SIGSTOP)
        self.result["disruptions"].append({
            "round": rnd, "at": at, "jobs": len(mine),
            "victim": victim.name if victim else "database"})
        # orphans: the victim's job processes alive when they must be gone
        # (after a kill: at once; after a stop: before the lease passes on)
        held = self.mode in ("stop", "cutoff")
        check = at + (self.lease + self.margin if held else ORPHAN_AFTER)
        # (and, after a kill of the worker alone, its launchers)
        watch = [*mine, *(launchers if self.mode == "worker" else [])]
        while time.time() < check and any(alive(p) for p in watch):
            time.sleep(0.05)
        self.result["orphans"] += [(rnd, pid, key) for pid, (key, _) in
                                   mine.items() if alive(pid)]
        with self.witness.lock:
            self.result["gone"] += [
                round(self.witness.dead.get(pid, time.time()) - at, 2)
                for pid in mine if pid not in self.witness.finished]
        if self.mode == "worker":
            self.result["stray_launchers"] += [p for p in launchers
                                               if alive(p)]
        ref = at
        if held:
            time.sleep(max(0.0, at + self.lease + HOLD_EXTRA - time.time()))
            os.kill(victim.pid if victim else self.server["pid"],
                    signal.SIGCONT)
            self.server["paused"] = False
            # with the database away nothing can run: count from its return
            ref = time.time() if self.mode == "cutoff" else at
        if self.mode in ("session", "worker"):
            victim.proc.wait(30)
            self.workers.remove(victim)
            self.dead.append(victim)
            self.registered(self.start_worker())
        deadline = time.monotonic() + self.lease * 4 + 120
        for pid, (key, _) in sorted(mine.items(), key=lambda i: i[1]):
            # the next start, unless the execution ended normally anyway
            found = wait_until(lambda: self.witness.starts(key, at) or (
                "ended" if pid in self.witness.finished else None) or (
                "never" if time.monotonic() > deadline else None), 1e9, key)
            if found == "never":
                self.result["notes"].append("round %d: %s never ran again"
                                            % (rnd, key))
            if found != "ended":
                self.affected[key] += 1
            if isinstance(found, list):
                self.result["recovery"].append(round(found[0] - ref, 3))
        time.sleep(1.0)

    def cleanup(self):
        """Resume the server, halt and kill the workers, kill what is left
        of the job processes."""
        if self.server.get("paused"):
            os.kill(self.server["pid"], signal.SIGCONT)
            self.server["paused"] = False
        self.witness.running = False
        try:
            self.queue.halt()
            wait_until(lambda: all(w.proc.poll() is not None
                                   for w in self.workers), 30, "halt")
        except Exception:  # noqa: BLE001 - killed below anyway
            pass
        for worker in self.workers + self.dead:
            worker.stop()
        for pid in self.witness.live():
            try:
                proc = psutil.Process(pid)
                if "core4" in " ".join(proc.cmdline()):
                    proc.kill()
            except psutil.Error:
                pass


def summarize(result, keys, docs, witness, affected):
    """Add the jobs' outcomes and the overlaps to ``result``."""
    flock, interval = witness.overlaps()
    execs = {k: len(witness.starts(k)) for k in keys}
    states = [d["state"] for d in docs.values()]
    result.update(
        flock_overlaps=flock, interval_overlaps=interval,
        overlaps=len(flock) + len(interval),
        states={s: states.count(s) for s in set(states)},
        lost_jobs=[k for k in keys if k not in docs or
                   docs[k]["state"] != "complete"],
        errors=[k for k in keys if k in docs and docs[k]["state"] == "error"],
        executions=sum(execs.values()),
        trials=sum(d.get("trial") or 0 for d in docs.values()),
        losses=sum(d.get("lost") or 0 for d in docs.values()),
        # a loss must not use up the single attempt of a job
        attempt_used=[k for k, d in docs.items() if d["state"] == "complete"
                      and d.get("attempts_left") != 0],
        trial_mismatch=[(k, d.get("trial"), execs[k])
                        for k, d in sorted(docs.items())
                        if d.get("trial") != execs[k]],
        spurious=[(k, d.get("lost"), affected[k])
                  for k, d in sorted(docs.items())
                  if (d.get("lost") or 0) > affected[k]],
        last_errors=sorted({(d.get("last_error") or {}).get(
            "exception", "")[:120] for d in docs.values()
            if d["state"] != "complete"}))


#: ERROR records the disruptions cause by design
EXPECTED = ("recovered job", "lost its lease before its outcome")


def log_errors(paths, expected=EXPECTED):
    """``{message: count}`` of the workers' ERROR records that contain
    none of ``expected``, with their tracebacks' last line."""
    found = {}
    for path in paths:
        with open(path, errors="replace") as handle:
            lines = handle.read().split("\n")
        for i, line in enumerate(lines):
            if " - ERROR " in line and not any(e in line for e in expected):
                j = i + 1
                while j < len(lines) and lines[j].startswith((" ", "Trace")):
                    j += 1
                text = line.split("] ", 1)[-1][:80] + (
                    " / " + lines[j][:80] if i + 1 < j < len(lines) else "")
                found[text] = found.get(text, 0) + 1
    return found


DETAILS = ("failed", "flock_overlaps", "interval_overlaps", "orphans",
           "lost_jobs", "errors", "attempt_used", "spurious",
           "trial_mismatch", "stray_launchers", "died", "notes",
           "last_errors", "log_errors")


def report(results, args):
    """Print a table of the modes, the details of what went wrong and the
    verdict; return True if every target was met."""
    lease, margin = 2 * args.heartbeat, args.margin
    target = lease + margin + 2.0
    print("\nheartbeat %.1f s, lease %.1f s, margin %.1f s; %d workers, %d "
          "jobs of %.1f s, %d round(s) per mode" % (
              args.heartbeat, lease, margin, args.workers, args.jobs,
              args.duration, args.rounds))
    head = ("hit", "overlap", "orphan", "lost", "error", "execs", "trials",
            "losses", "spur", "gone", "rec p50", "rec p99", "rec max")
    print("%-9s" % "mode" + "".join("%8s" % h for h in head))
    every, total = [], dict.fromkeys(
        ("overlaps", "orphans", "lost_jobs", "errors"), 0)
    for res in results:
        if "failed" in res:
            print("%-9s  FAILED" % res["mode"])
            total["lost_jobs"] += args.jobs
            continue
        rec = res["recovery"]
        every += rec
        for key in total:
            total[key] += (len(res[key]) if isinstance(res[key], list)
                           else res[key])
        cells = [sum(d["jobs"] for d in res["disruptions"]), res["overlaps"],
                 len(res["orphans"]), len(res["lost_jobs"]),
                 len(res["errors"]), res["executions"], res["trials"],
                 res["losses"], len(res["spurious"]),
                 "%.2f" % max(res["gone"]) if res["gone"] else "-"]
        cells += (["%.2f" % percentile(rec, q) for q in (0.5, 0.99, 1.0)]
                  if rec else ["-"] * 3)
        print("%-9s" % res["mode"] + "".join("%8s" % c for c in cells))
    for res in results:
        for name in DETAILS:
            if res.get(name):
                print("  %s %s: %s" % (res["mode"], name, res[name]))
    ok = True
    for name, key in (("overlaps", "overlaps"), ("orphans", "orphans"),
                      ("lost", "lost_jobs"), ("error", "errors")):
        ok &= total[key] == 0
        print("%-9s %4d    target 0    %s" % (
            name, total[key], "PASS" if total[key] == 0 else "FAIL"))
    p99 = percentile(every, 0.99) if every else float("inf")
    ok &= p99 <= target
    print("recovery  p50 %.2f s, p99 %.2f s (%d samples), target p99 <= "
          "%.1f s    %s" % (percentile(every, 0.5) if every else 0, p99,
                            len(every), target,
                            "PASS" if p99 <= target else "FAIL"))
    return ok


def main():
    """Parse the options, run the modes and print the report."""
    from bench import chaos_storm
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--jobs", type=int, help="default %d, for the "
                        "storm %d" % (JOBS, STORM_JOBS))
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--duration", type=float,
                        help="seconds each job runs (default 2 leases + 6)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary home (logs, witness)")
    chaos_storm.add_arguments(parser)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    storm = argparse.Namespace(**dict(vars(args), jobs=args.jobs or
                                      STORM_JOBS))
    args.jobs = args.jobs or JOBS
    lease = args.heartbeat * 2
    # long enough to run on after a stop of lease + HOLD_EXTRA
    args.duration = args.duration or 2 * lease + HOLD_EXTRA + 1
    if set(modes) - set(MODES + ("storm",)) or args.duration <= lease:
        parser.error("modes are %s; --duration must be longer than the "
                     "lease (%.1f s)" % (",".join(MODES + ("storm",)),
                                         lease))
    # enough slots that the survivors can take over a dead worker's jobs
    args.max_jobs = max(1, math.ceil(args.jobs / max(1, args.workers - 1)))
    # a SIGTERM cleans up like Ctrl-C: workers, job processes, the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    home = tempfile.mkdtemp(prefix="core4-chaos-")
    os.environ.pop("CORE4_OPTION_DEFAULT__mongo_url", None)
    os.environ["CORE4_OPTION_folder__home"] = home
    os.environ["CORE4_OPTION_logging__mongodb"] = "WARNING"
    local = os.path.join(home, "local.yaml")
    with open(local, "w") as handle:
        handle.write("{}\n")
    os.environ["CORE4_CONFIG"] = local
    from core4.config import get_config, reset_config
    from core4.mongo import embedded
    reset_config()
    # the margin core4 uses (daemon.lease_margin may be set in the env)
    margin = get_config().daemon.lease_margin
    args.margin = args.heartbeat / 2 if margin is None else float(margin)
    storm.margin = args.margin
    nx = os.path.join(home, "nx")
    server, results, ok = {"paused": False}, [], False
    try:
        server["url"] = embedded.ensure_server(nx)
        server["dir"] = os.path.realpath(nx)
        with open(os.path.join(nx, "server.json")) as handle:
            server["pid"] = json.load(handle)["pid"]
        for number, mode in enumerate(modes):
            began = time.monotonic()
            print("%s ..." % mode, end=" ", flush=True)
            try:
                res = (chaos_storm.StormRun(storm, server, home, number).run()
                       if mode == "storm" else
                       ModeRun(mode, args, server, home, number).run())
            except RuntimeError as exc:
                print("FAILED: %s" % exc)
                res = {"mode": mode, "failed": str(exc)}
            results.append(res)
            print("%.0f s" % (time.monotonic() - began), flush=True)
        kills = [r for r in results if r["mode"] != "storm"]
        ok = report(kills, args) if kills else True
        for res in results:
            if res["mode"] == "storm":
                ok &= chaos_storm.report(res, storm)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"args": vars(args), "results": results}, handle,
                          indent=1, default=str)
    finally:
        if server.get("paused"):
            os.kill(server["pid"], signal.SIGCONT)
        embedded.stop_server(nx)
        if args.keep or not ok:
            print("home kept: %s" % home)
        else:
            shutil.rmtree(home, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
