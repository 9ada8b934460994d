"""core4 against the job systems users would pick instead, on one machine:
one run, interleaved rounds, each system's figure and its ratio to core4
per round, then the medians over the rounds::

    .venv/bin/python bench/peers.py                 # 3 rounds, all systems
    .venv/bin/python bench/peers.py --quick         # smoke run, 1 round
    .venv/bin/python bench/peers.py --peers core4,rq-fork,huey --rounds 5 \\
        --jobs 2000 --json peers.json

Systems: ``core4`` (its default configuration: one OS process per job,
forked from a warm launcher; a worker runs up to ``worker.max_jobs`` = 16
jobs at once), ``rq-fork`` (RQ ``Worker``: a fork per job), ``rq-simple``
(RQ ``SimpleWorker``: jobs in the worker process), ``celery-pertask``
(Celery prefork, concurrency 1, ``--max-tasks-per-child 1``: a new process
per task), ``celery-prefork`` (Celery prefork pool, long-lived children)
and ``huey`` (``huey_consumer -k thread -w 1``). The peers use a redis
server that the script starts on a free loopback port (no persistence,
temporary directory): ``apt-get install redis-server``. They run in a venv
of the script's own, ``~/.cache/core4-bench/peers-venv`` (``--peers-venv``),
created with ``pip install rq celery[redis] redis huey`` when missing; they
are no dependencies of core4. Their tasks are in ``bench/peer_tasks.py``.

Workloads (each round runs every system on each, in a rotating order):

(a) N no-op jobs (``--jobs``, default 1,000) enqueued before 1 worker
    starts; jobs/s from the first job's start to the last job's end.
(b) the same with 2 workers: 2 worker processes (core4, RQ, Huey: two
    consumers of one thread each; celery-pertask: two workers of
    concurrency 1); celery-prefork: one worker of concurrency 2. In (a)
    celery-prefork is one worker of concurrency 1.
(c) ``--sleep-jobs`` jobs (200) that sleep 0.1 s, on 2 workers as in (b).
(d) dispatch latency: one idle worker, ``--latency-samples`` (100) times:
    wait 0.2 s, enqueue a job that records ``time.time()`` when it begins;
    p50 and p99 of (begin - time before the enqueue) in ms.

Time stamps: a peer's task pushes its start and end (``time.time()``) to
redis; core4's figures come from ``started_at`` / ``finished_at`` of the
``sys_journal`` documents (claim of the job → its outcome recorded, so a
slightly longer span), epoch floats or BSON datetimes alike. celery-pertask
is capped at ``--pertask-jobs`` (100) jobs and ``--pertask-samples`` (20)
latency samples: it runs about one task per 5 s (Celery replaces an exited
child when its pool maintenance runs, every 5 s). ``--timeout`` (600 s)
bounds each measurement: past it, or if a worker dies, the figure is
reported as failed. Ratio = system / core4: above 1 a peer has more jobs/s,
or (latency) more ms than core4.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import throughput as tp  # noqa: E402

try:
    from core4.queue.job import CoreJob
except ImportError as exc:  # pragma: no cover - a broken core4 venv
    raise SystemExit("cannot import core4 (%s): run with core4's "
                     ".venv/bin/python" % exc)

PEERS = ("rq-fork", "rq-simple", "celery-pertask", "celery-prefork", "huey")
SYSTEMS = ("core4",) + PEERS
WORKLOADS = ("a", "b", "c", "d")
SLEEP = 0.1
SLEEP_JOB = "bench.peers.SleepJob"
PEERS_VENV = os.path.expanduser("~/.cache/core4-bench/peers-venv")
PEER_PACKAGES = ("rq", "celery[redis]", "redis", "huey")
#: core4 options this script sets (everything else is core4's default)
CHANGED = ("folder.home=<temporary directory>",
           "DEFAULT.mongo_database=peers_<round>_<workload>")
LIVE = []  # processes to end on exit: (kind, Popen)


class SleepJob(CoreJob):
    """Sleep ``sleep`` seconds (workload c)."""

    author = "mra"

    def execute(self, sleep=SLEEP, **kwargs):
        time.sleep(float(sleep))


def epoch(value):
    """Return epoch seconds of a journal time stamp: a float, or a BSON
    datetime (naive means UTC)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    return float(value)


def percentiles(samples):
    """Return ``{"p50", "p99", "n"}`` of ``samples`` (ms)."""
    lat = sorted(samples)
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    return {"p50": statistics.median(lat), "p99": p99, "n": len(lat)}


def kill_tree(proc):
    """Kill ``proc`` (a Popen) and all its descendants."""
    import psutil
    try:
        procs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        procs = []
    procs.append(proc)
    for each in procs:
        try:
            each.kill()
        except (OSError, psutil.Error):
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def cleanup():
    """End every process this script started that is still alive."""
    while LIVE:
        kind, proc = LIVE.pop()
        if proc.poll() is None:
            if kind == "group":  # a peer driver and its workers
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            kill_tree(proc)


# -- core4 ------------------------------------------------------------------

def configure(home, database):
    """Point this process and its workers at ``database`` under ``home``
    with core4's default configuration; return a ``CoreQueue``.

    Uses ``bench/throughput.py``'s ``configure`` and drops again what it
    sets beyond the temporary home and the database (worker.max_jobs,
    job.max_parallel, logging.stderr). An empty local configuration file
    keeps ``~/.core4/local.yaml`` out."""
    from core4.config import reset_config
    from core4.queue.queue import CoreQueue
    tp.configure(home, database)
    keep = ("folder__home", "DEFAULT__mongo_database")
    for name in list(os.environ):
        if name.startswith("CORE4_OPTION_") and name[13:] not in keep:
            del os.environ[name]
    local = os.path.join(home, "local.yaml")
    if not os.path.exists(local):
        open(local, "w").close()
    os.environ["CORE4_CONFIG"] = local
    reset_config()
    return CoreQueue()


def tail(log, size=3000):
    """Print the end of ``log`` to stderr; return its last line."""
    log.flush()
    with open(log.name, "rb") as handle:
        handle.seek(max(0, os.path.getsize(log.name) - size))
        text = handle.read().decode(errors="replace")
    sys.stderr.write(text)
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _start(queue, workers, log):
    procs = tp.start_workers(workers, "fork", log)
    LIVE.extend(("tree", proc) for proc in procs)
    return procs


def _stop(queue, procs):
    tp.stop_workers(queue, procs)  # halt, 60 s each, then kill
    for proc in procs:
        if proc.poll() is None:
            kill_tree(proc)
    LIVE[:] = [item for item in LIVE if item[1] not in procs]


def core4_throughput(ctx, database, jobs, workers, sleep):
    """Run ``jobs`` jobs (no-op, or ``SleepJob`` if ``sleep``) pre-enqueued
    on ``workers`` core4 workers; return ``{"value": jobs/s, ...}`` or
    ``{"error": ...}``."""
    queue = configure(ctx.home, database)
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    for i in range(jobs):
        if sleep:
            queue.enqueue(SLEEP_JOB, i=i, sleep=sleep)
        else:
            queue.enqueue(tp.NOOP, i=i)
    procs = _start(queue, workers, ctx.log)
    try:
        deadline = time.monotonic() + ctx.timeout
        while tp.journal_count(queue) < jobs:
            if time.monotonic() > deadline:
                return {"error": "timeout after %ds: %d of %d jobs done" % (
                    ctx.timeout, tp.journal_count(queue), jobs)}
            if any(proc.poll() is not None for proc in procs):
                return {"error": "a worker exited: " + tail(ctx.log)}
            time.sleep(0.25)
    finally:
        _stop(queue, procs)
    docs = list(queue.sys.journal.find(
        {}, {"state": 1, "started_at": 1, "finished_at": 1}))
    span = max(epoch(d["finished_at"]) for d in docs) \
        - min(epoch(d["started_at"]) for d in docs)
    result = {"value": len(docs) / span, "jobs": len(docs), "span": span}
    bad = [d for d in docs if d.get("state") != "complete"]
    if bad:
        result["error"] = "%d jobs did not complete" % len(bad)
    return result


def core4_latency(ctx, database, samples):
    """Measure ``samples`` dispatch latencies (ms) on one idle core4 worker
    (``bench.jobs.StampJob`` writes the time its ``execute()`` begins to a
    named pipe the benchmark blocks on, as a peer's task pushes it to a
    redis list the driver blocks on)."""
    queue = configure(ctx.home, database)
    queue.sys.queue.drop()
    queue.sys.journal.drop()
    procs = _start(queue, 1, ctx.log)
    pipe = tp.StampPipe(ctx.home)
    try:
        deadline = time.monotonic() + ctx.timeout
        queue.enqueue(tp.STAMP, i=-1, fifo=pipe.path)
        if pipe.wait(ctx.timeout) is None:
            if procs[0].poll() is not None:
                return {"error": "the worker exited: " + tail(ctx.log)}
            return {"error": "the warm-up job did not run"}
        found = []
        for i in range(samples):
            time.sleep(0.2)  # let the worker go idle
            at = time.time()
            queue.enqueue(tp.STAMP, i=i, fifo=pipe.path)
            began = pipe.wait(max(0.0, deadline - time.monotonic()))
            if began is None:
                return {"error": "timeout after %ds: %d of %d samples" % (
                    ctx.timeout, len(found), samples)}
            found.append((began - at) * 1000)
    finally:
        pipe.close()
        _stop(queue, procs)
    return {"samples": found}


# -- peers ------------------------------------------------------------------

def peers_python(venv):
    """Return the python of the peers' venv, creating the venv (``python -m
    venv`` and ``pip install rq celery[redis] redis huey``) if it is
    missing or incomplete."""
    python = os.path.join(venv, "bin", "python")
    probe = [python, "-c", "import rq, celery, huey, kombu.transport.redis"]
    if os.path.exists(python) and subprocess.run(
            probe, capture_output=True, timeout=120).returncode == 0:
        return python
    print("installing the peers into %s ..." % venv, flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True,
                   timeout=300)
    subprocess.run([python, "-m", "pip", "install", "-q"]
                   + list(PEER_PACKAGES), check=True, timeout=1200)
    return python


def peer_versions(python):
    """Return ``{package: version}`` of the peers in their venv."""
    code = ("import json, importlib.metadata as m; print(json.dumps({p: "
            "m.version(p) for p in ('rq', 'celery', 'huey', 'redis')}))")
    out = subprocess.run([python, "-c", code], capture_output=True,
                         text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def start_redis(exe, tmp, log):
    """Start ``exe`` (redis-server) on a free loopback port without
    persistence in ``tmp``; return its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp, "--daemonize", "no"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    LIVE.append(("tree", proc))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return "redis://127.0.0.1:%d/0" % port
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit("redis-server did not start (log: %s)" % log.name)


def peer(ctx, system, what, *args):
    """Run one measurement of a peer with ``bench/peer_tasks.py`` in the
    peers' venv, bounded by ``ctx.timeout``; return its result dict."""
    cmd = [ctx.peer_python, "-m", "bench.peer_tasks", system, what] \
        + [str(a) for a in args] \
        + ["--timeout", str(ctx.timeout), "--log", ctx.log.name]
    env = dict(os.environ, BENCH_REDIS_URL=ctx.redis, PYTHONPATH=ROOT)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=ctx.log,
                            stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
                            start_new_session=True)
    LIVE.append(("group", proc))
    try:
        out, _ = proc.communicate(timeout=ctx.timeout + 90)
    except subprocess.TimeoutExpired:
        return {"error": "no answer in %ds" % (ctx.timeout + 90)}
    finally:
        cleanup_one(proc)
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "the driver failed: " + tail(ctx.log)}


def cleanup_one(proc):
    """End a peer driver's process group (workers left behind included)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    if proc.poll() is None:
        kill_tree(proc)
    LIVE[:] = [item for item in LIVE if item[1] is not proc]


# -- the rounds -------------------------------------------------------------

def jobs_for(ns, system, workload):
    """Return the number of jobs of ``workload`` for ``system``."""
    jobs = ns.sleep_jobs if workload == "c" else ns.jobs
    return min(jobs, ns.pertask_jobs) if system == "celery-pertask" else jobs


def title(ns, workload):
    """Return the heading of ``workload``."""
    return {"a": "(a) %d no-op jobs, 1 worker" % ns.jobs,
            "b": "(b) %d no-op jobs, 2 workers" % ns.jobs,
            "c": "(c) %d jobs sleeping %.1f s, 2 workers"
            % (ns.sleep_jobs, SLEEP),
            "d": "(d) dispatch latency, idle worker, %d samples"
            % ns.latency_samples}[workload]


def measure(ctx, ns, rnd, system, workload):
    """Return the result of ``system`` on ``workload`` in round ``rnd``."""
    jobs = jobs_for(ns, system, workload)
    workers = 1 if workload == "a" else 2
    sleep = SLEEP if workload == "c" else 0.0
    started = time.monotonic()
    if system == "core4":
        database = "peers_%d_%s" % (rnd, workload)
        if workload == "d":
            result = core4_latency(ctx, database, ns.latency_samples)
        else:
            result = core4_throughput(ctx, database, jobs, workers, sleep)
    elif workload == "d":
        result = peer(ctx, system, "latency", "--samples", min(
            ns.latency_samples, ns.pertask_samples) if system ==
            "celery-pertask" else ns.latency_samples)
    else:
        result = peer(ctx, system, "throughput", "--jobs", jobs,
                      "--workers", workers, "--sleep", sleep)
    if result.get("samples"):
        result.update(percentiles(result.pop("samples")))
        result["value"], result["jobs"] = result["p50"], result["n"]
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def figure(workload, result):
    """Return the printed figure of one result."""
    if result is None or result.get("value") is None:
        return "FAILED: %s" % (result or {}).get("error", "not run")
    if workload == "d":
        text = "p50 %6.1f ms  p99 %6.1f ms (%d)" % (
            result["value"], result["p99"], result["jobs"])
    else:
        text = "%8.1f jobs/s (%d jobs)" % (result["value"], result["jobs"])
    return text + ("  [%s]" % result["error"] if result.get("error") else "")


def summary(systems, rounds):
    """Return the medians over ``rounds`` (lists of per-round results): per
    workload and system the median figure (p50 and p99 for latency) and the
    median of the per-round ratios to core4 (system / core4)."""
    out = {}
    for workload in WORKLOADS:
        out[workload] = {}
        for system in systems:
            values, ratios, p99s, jobs = [], [], [], None
            for results in rounds:
                res = results[workload].get(system) or {}
                base = (results[workload].get("core4") or {}).get("value")
                if res.get("value") is not None:
                    values.append(res["value"])
                    p99s.append(res.get("p99"))
                    jobs = res.get("jobs")
                    if base:
                        ratios.append(res["value"] / base)
            med = statistics.median
            out[workload][system] = {
                "value": med(values) if values else None,
                "p99": med(p99s) if p99s and None not in p99s else None,
                "jobs": jobs, "rounds": len(values),
                "ratio": med(ratios) if ratios else None}
    return out


def print_summary(ns, systems, medians, heading):
    """Print a table of ``medians`` (see :func:`summary`)."""
    print("\n" + heading)
    for workload in WORKLOADS:
        print("  " + title(ns, workload))
        for system in systems:
            med = medians[workload][system]
            text = "FAILED" if med["value"] is None else figure(workload, med)
            vs = "" if system == "core4" or med["ratio"] is None \
                else "%8.3gx" % med["ratio"]
            print("    %-15s %-36s %s" % (system, text, vs))
    sys.stdout.flush()


class Context:
    """What the measurements share: temporary home, log, redis, timeout."""

    def __init__(self, home, log, timeout):
        self.home, self.log, self.timeout = home, log, timeout
        self.redis = self.peer_python = None


def parse_args(argv=None):
    """Parse the command line (``--quick`` fills unset sizes small)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--jobs", type=int, help="jobs of (a) and (b)")
    parser.add_argument("--sleep-jobs", type=int, help="jobs of (c)")
    parser.add_argument("--latency-samples", type=int)
    parser.add_argument("--pertask-jobs", type=int,
                        help="cap of celery-pertask's jobs (default 100)")
    parser.add_argument("--pertask-samples", type=int,
                        help="cap of its latency samples (default 20)")
    parser.add_argument("--peers", default=",".join(SYSTEMS),
                        help="systems to run, comma-separated (default: "
                        "all of %s)" % ",".join(SYSTEMS))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 jobs, 40 sleep jobs, 1 round, "
                        "20 samples, celery-pertask capped at 10 and 5")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds one measurement may take (600)")
    parser.add_argument("--peers-venv", default=PEERS_VENV)
    parser.add_argument("--json", help="write the results to this file")
    ns = parser.parse_args(argv)
    sizes = (1, 100, 40, 20, 10, 5) if ns.quick \
        else (3, 1000, 200, 100, 100, 20)
    for name, value in zip(("rounds", "jobs", "sleep_jobs", "latency_samples",
                            "pertask_jobs", "pertask_samples"), sizes):
        if getattr(ns, name) is None:
            setattr(ns, name, value)
    ns.systems = [s.strip() for s in ns.peers.split(",") if s.strip()]
    unknown = set(ns.systems) - set(SYSTEMS)
    if unknown or not ns.systems:
        parser.error("--peers: unknown %s (choose from %s)" % (
            ",".join(sorted(unknown)) or "(none)", ",".join(SYSTEMS)))
    if "core4" not in ns.systems:
        ns.systems.insert(0, "core4")  # the ratios need it
    ns.systems = [s for s in SYSTEMS if s in ns.systems]
    return ns


def preamble(ns, ctx):
    """Print what runs, with which settings."""
    import core4
    print("core4 %s (%s): changed from its defaults only %s; everything else "
          "default (fork launcher, worker.max_jobs 16, job.max_parallel 15)"
          % (getattr(core4, "__version__", "?"), sys.executable,
             ", ".join(CHANGED)))
    if ctx.peer_python:
        print("peers: %s in %s; redis-server at %s" % (
            ", ".join("%s %s" % kv for kv in ns.versions.items()),
            os.path.dirname(os.path.dirname(ctx.peer_python)), ctx.redis))
    if "celery-pertask" in ns.systems:
        print("celery-pertask is capped at %d jobs in (a), (b), (c) and %d "
              "samples in (d)" % (ns.pertask_jobs, ns.pertask_samples))
    print("rounds %d, jobs %d, sleep jobs %d, latency samples %d, timeout "
          "%ds per measurement; ratio = system / core4 (jobs/s: >1 peer "
          "faster; latency: >1 peer slower)" % (
              ns.rounds, ns.jobs, ns.sleep_jobs, ns.latency_samples,
              ns.timeout), flush=True)


def _interrupt(*_):
    raise KeyboardInterrupt()


def main(argv=None):
    """Run the rounds, print the tables, write ``--json``."""
    ns = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    home = tempfile.mkdtemp(prefix="core4-peers-")
    ns.done, interrupted = [], False
    from core4.mongo import embedded
    try:
        with open(os.path.join(home, "bench.log"), "ab") as log:
            ctx = Context(home, log, ns.timeout)
            if set(ns.systems) & set(PEERS):
                exe = shutil.which("redis-server")
                if not exe:
                    raise SystemExit("redis-server not found: apt-get install"
                                     " redis-server (or use --peers core4)")
                ctx.peer_python = peers_python(ns.peers_venv)
                ns.versions = peer_versions(ctx.peer_python)
                ctx.redis = start_redis(exe, tempfile.mkdtemp(dir=home), log)
            preamble(ns, ctx)
            try:
                for rnd in range(1, ns.rounds + 1):
                    results = {w: {} for w in WORKLOADS}
                    shift = (rnd - 1) % len(ns.systems)
                    order = ns.systems[shift:] + ns.systems[:shift]
                    for workload in WORKLOADS:
                        for system in order:
                            results[workload][system] = measure(
                                ctx, ns, rnd, system, workload)
                            print("  . round %d %s %-15s %s (%.0f s)" % (
                                rnd, workload, system, figure(
                                    workload, results[workload][system]),
                                results[workload][system]["seconds"]),
                                flush=True)
                    ns.done.append(results)
                    print_summary(ns, ns.systems, summary(
                        ns.systems, [results]), "ROUND %d of %d" % (
                            rnd, ns.rounds))
            except KeyboardInterrupt:
                interrupted = True
                print("\ninterrupted: medians of the finished rounds")
            medians = summary(ns.systems, ns.done) if ns.done else {}
            if medians:
                print_summary(ns, ns.systems, medians, "MEDIANS over %d "
                              "round(s); ratio: median of the per-round "
                              "ratios to core4" % len(ns.done))
            if ns.json:
                with open(ns.json, "w") as handle:
                    json.dump({"settings": {
                        k: getattr(ns, k) for k in (
                            "rounds", "jobs", "sleep_jobs", "latency_samples",
                            "pertask_jobs", "pertask_samples", "timeout",
                            "systems")},
                        "core4_changed": CHANGED,
                        "peer_versions": getattr(ns, "versions", {}),
                        "rounds": ns.done, "medians": medians,
                        "interrupted": interrupted}, handle, indent=1)
                print("results written to %s" % ns.json)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # clean up in peace
        cleanup()
        embedded.stop_server(os.path.join(home, "mongo"))
        shutil.rmtree(home, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return 130 if interrupted else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
