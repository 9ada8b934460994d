"""The peers' side of ``bench/peers.py``: tasks for RQ, Celery and Huey and
a driver that runs one measurement of one peer.

This module runs only in the peers' own venv (``rq``, ``celery``, ``redis``,
``huey``; see ``bench/peers.py``), never in core4's. Importing it costs one
``import redis``: the Celery app (``app``) and the Huey instance (``huey``)
are built on first access, so that an RQ work horse, which imports the task
module anew for every job, pays for no other framework.

Every task records its own time stamps (``time.time()``) in redis:
``work(sleep)`` pushes ``"<start> <end>"`` to ``bench:stamps``, ``stamp()``
pushes ``"<start>"`` to ``bench:lat``. The redis URL is ``$BENCH_REDIS_URL``.

Driver (run by ``bench/peers.py``; prints one JSON line)::

    PEERS_VENV/bin/python -m bench.peer_tasks SYSTEM throughput \\
        --jobs N --workers W [--sleep S] --timeout T --log FILE
    PEERS_VENV/bin/python -m bench.peer_tasks SYSTEM latency \\
        --samples K --timeout T --log FILE

SYSTEM is one of :data:`SYSTEMS`.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import redis

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
STAMPS = "bench:stamps"
LAT = "bench:lat"
_conn = []
HUEY_TASKS = {}


def connection():
    """Return this process's redis client (redis-py re-connects after a
    fork by itself)."""
    if not _conn:
        _conn.append(redis.Redis.from_url(URL))
    return _conn[0]


def work(sleep=0.0):
    """The benchmark job: sleep ``sleep`` seconds (0: a no-op) and record
    its start and end."""
    start = time.time()
    if sleep:
        time.sleep(sleep)
    connection().rpush(STAMPS, "%.6f %.6f" % (start, time.time()))


def stamp():
    """Record the time the job began (dispatch latency)."""
    connection().rpush(LAT, "%.6f" % time.time())


def __getattr__(name):
    """Build the Celery app (``app``) or the Huey instance (``huey``) and
    register the tasks with it on first access."""
    if name == "app":
        from celery import Celery
        app = Celery("bench", broker=URL)
        app.conf.broker_connection_retry_on_startup = True
        app.task(name="bench.work", ignore_result=True)(work)
        app.task(name="bench.stamp", ignore_result=True)(stamp)
        value = app
    elif name == "huey":
        from huey import RedisHuey
        value = RedisHuey("bench", url=URL)
        HUEY_TASKS["work"] = value.task(name="bench.work")(work)
        HUEY_TASKS["stamp"] = value.task(name="bench.stamp")(stamp)
    else:
        raise AttributeError(name)
    globals()[name] = value
    return value


#: the peers: how to start worker number ``k`` of ``count`` (a command, or
#: None if this peer runs all ``count`` in one process started for k == 0)
SYSTEMS = ("rq-fork", "rq-simple", "celery-pertask", "celery-prefork", "huey")


def worker_command(system, k, count):
    """Return the command line of worker ``k`` (of ``count``) of ``system``,
    or None if worker 0 already runs all of them."""
    venv = os.path.dirname(sys.executable)
    if system in ("rq-fork", "rq-simple"):
        cls = "rq.worker.Worker" if system == "rq-fork" \
            else "rq.worker.SimpleWorker"
        return [os.path.join(venv, "rq"), "worker", "-u", URL, "-w", cls,
                "-n", "bench%d-%d" % (k, os.getpid())]
    if system == "celery-pertask":
        return [os.path.join(venv, "celery"), "-A", "bench.peer_tasks:app",
                "worker", "-P", "prefork", "-c", "1",
                "--max-tasks-per-child", "1", "-n", "bench%d@%%h" % k]
    if system == "celery-prefork":
        if k:
            return None
        return [os.path.join(venv, "celery"), "-A", "bench.peer_tasks:app",
                "worker", "-P", "prefork", "-c", str(count),
                "-n", "bench0@%h"]
    if system == "huey":
        return [os.path.join(venv, "huey_consumer"), "bench.peer_tasks.huey",
                "-k", "thread", "-w", "1"]
    raise SystemExit("unknown system %r" % system)


def enqueue(system, task, *args):
    """Enqueue ``task`` ("work" or "stamp") with ``args`` on ``system``."""
    import bench.peer_tasks as tasks  # the registered objects, not __main__'s
    if system.startswith("rq"):
        from rq import Queue
        Queue(connection=connection()).enqueue(
            "bench.peer_tasks." + task, *args)
    elif system.startswith("celery"):
        tasks.app.send_task("bench." + task, args=args)
    else:
        assert tasks.huey  # registers the tasks
        tasks.HUEY_TASKS[task](*args)


def start(system, count, log):
    """Start ``count`` workers of ``system``; return their processes."""
    cmds = [worker_command(system, k, count) for k in range(count)]
    return [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
            for cmd in cmds if cmd]


def stop(system, procs):
    """Shut the idle ``procs`` down: the warm signal (huey: SIGINT, others:
    SIGTERM), after 5 s again (RQ: cold shutdown), after 10 s more SIGKILL."""
    sig = signal.SIGINT if system == "huey" else signal.SIGTERM
    for wait in (5, 10, None):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(sig) if wait else proc.kill()
        deadline = time.monotonic() + (wait or 10)
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(proc.poll() is not None for proc in procs):
            return


def throughput(system, jobs, workers, sleep, timeout, log):
    """Run ``jobs`` pre-enqueued ``work(sleep)`` jobs on ``workers`` workers;
    return the result dict (jobs/s from the first start to the last end)."""
    conn = connection()
    conn.flushall()
    for _ in range(jobs):
        enqueue(system, "work", sleep)
    procs = start(system, workers, log)
    try:
        deadline = time.monotonic() + timeout
        while conn.llen(STAMPS) < jobs:
            if time.monotonic() > deadline:
                return {"error": "timeout after %ds: %d of %d jobs done"
                        % (timeout, conn.llen(STAMPS), jobs)}
            if all(p.poll() is not None for p in procs):
                return {"error": "the workers exited (see the log)"}
            time.sleep(0.05)
    finally:
        stop(system, procs)
    rows = [tuple(map(float, v.split())) for v in conn.lrange(STAMPS, 0, -1)]
    span = max(r[1] for r in rows) - min(r[0] for r in rows)
    return {"value": len(rows) / span, "jobs": len(rows), "span": span}


def _pop(conn, deadline):
    """Return the next stamp of ``bench:lat``, None past ``deadline``
    (short BLPOPs: redis-py's socket timeout is 5 s)."""
    while time.monotonic() < deadline:
        got = conn.blpop([LAT], timeout=1)
        if got:
            return float(got[1])
    return None


def latency(system, samples, timeout, log):
    """Measure ``samples`` dispatch latencies (ms, enqueue → the job starts)
    on one idle worker; return the result dict with the list."""
    conn = connection()
    conn.flushall()
    procs = start(system, 1, log)
    try:
        deadline = time.monotonic() + timeout
        enqueue(system, "stamp")  # warm-up, waits for the worker to be up
        if _pop(conn, deadline) is None:
            return {"error": "the warm-up job did not run in %ds" % timeout}
        found = []
        for _ in range(samples):
            time.sleep(0.2)  # let the worker go idle
            at = time.time()
            enqueue(system, "stamp")
            got = _pop(conn, deadline)
            if got is None:
                return {"error": "timeout after %ds: %d of %d samples"
                        % (timeout, len(found), samples)}
            found.append((got - at) * 1000)
    finally:
        stop(system, procs)
    return {"samples": found}


def main():
    """Run one measurement and print its result as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("what", choices=("throughput", "latency"))
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--log", default=os.devnull)
    ns = parser.parse_args()
    with open(ns.log, "ab") as log:
        try:
            if ns.what == "throughput":
                result = throughput(ns.system, ns.jobs, ns.workers, ns.sleep,
                                    ns.timeout, log)
            else:
                result = latency(ns.system, ns.samples, ns.timeout, log)
        except Exception as exc:  # reported as a failed figure
            result = {"error": "%s: %s" % (type(exc).__name__, exc)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
