"""Database operations of an idle worker.

Starts one worker with the default configuration on the embedded NX-27017
server in a temporary core4 home, lets it settle, and then counts every
command its MongoDB clients send for a while (a pymongo command listener in
the worker's process)::

    .venv/bin/python bench/idle.py [--seconds 60] [--warmup 10]

Prints operations per second and the breakdown by command and collection.
A ``getMore`` of the change stream waits on the server for events, so it
counts once per wait. The target of issue 11 is at most 2 operations per
second.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def child(seconds, warmup):
    """In the worker's process: count commands between ``warmup`` and
    ``warmup + seconds``, then stop the worker and print the counts."""
    from pymongo import monitoring

    counts = collections.Counter()
    counting = threading.Event()

    class Listener(monitoring.CommandListener):
        def started(self, event):
            if counting.is_set():
                target = event.command.get(event.command_name)
                counts["%s %s" % (event.command_name, target if isinstance(
                    target, str) else "")] += 1

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    monitoring.register(Listener())
    from core4.queue.worker import CoreWorker
    worker = CoreWorker("idle")

    def clock():
        time.sleep(warmup)
        counting.set()
        time.sleep(seconds)
        counting.clear()
        worker.begin_stop("benchmark over")

    threading.Thread(target=clock, daemon=True).start()
    worker.start()
    print(json.dumps(dict(counts)))


def main():
    """Start the worker in a child process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--child", action="store_true",
                        help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        return child(ns.seconds, ns.warmup)
    home = tempfile.mkdtemp(prefix="core4-bench-idle-")
    env = dict(os.environ)
    env.pop("CORE4_OPTION_DEFAULT__mongo_url", None)
    env.update({"CORE4_OPTION_folder__home": home,
                "CORE4_OPTION_DEFAULT__mongo_database": "bench_idle",
                "CORE4_OPTION_logging__stderr": "WARNING",
                "PYTHONPATH": ROOT})
    from core4.mongo import embedded
    try:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child",
             "--seconds", str(ns.seconds), "--warmup", str(ns.warmup)],
            env=env, stdout=subprocess.PIPE, text=True, check=True,
            timeout=ns.seconds + ns.warmup + 120).stdout
        counts = json.loads(out.strip().splitlines()[-1])
    finally:
        embedded.stop_server(os.path.join(home, "mongo"))
        shutil.rmtree(home, ignore_errors=True)
    total = sum(counts.values())
    print("idle worker: %d database operations in %.0f s = %.2f per second"
          % (total, ns.seconds, total / ns.seconds))
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        print("  %6.2f/s  %s" % (count / ns.seconds, name))


if __name__ == "__main__":
    main()
