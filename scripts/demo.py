"""The demo of ``scripts/run``: DummyJob through a real worker.

Starts the embedded database (on demand) and a worker, enqueues
``core4.queue.helper.job.DummyJob``, shows its progress until it completes,
prints its detail (with its captured output) and halts the worker. The
embedded database keeps running; the last line says how to stop it.
"""

import os
import subprocess
import sys
import time

from core4.config import get_config
from core4.logger import format_record, job_records
from core4.queue.queue import CoreQueue
from core4.script import display


def progress_bar(value, width=30):
    """Return a text progress bar for ``value`` in 0..1."""
    done = int(round((value or 0) * width))
    return "[%s%s] %3d%%" % ("#" * done, "." * (width - done),
                             round((value or 0) * 100))


def embedded_hint(config):
    """The closing line about the embedded database, or None if a
    ``mongo_url`` is configured."""
    from core4.mongo.connection import embedded_data_dir
    from core4.mongo.embedded import server_status
    if config.sys.queue.url:
        return None
    coco = os.path.join(os.path.dirname(sys.executable), "coco")
    if coco.startswith(os.getcwd() + os.sep):
        coco = os.path.relpath(coco)
    status = server_status(embedded_data_dir(config))
    if not (status and status["alive"]):
        return None
    return ("the embedded database keeps running (pid %d, data %s): "
            "%s --db shows it, %s --db stop stops it" % (
                status["pid"], status["data_dir"], coco, coco))


def main():
    """Run DummyJob through a worker and print its final document."""
    sleep = float(sys.argv[1]) if len(sys.argv) > 1 else 3
    config = get_config()
    queue = CoreQueue(config)
    print("core4 demo: database %s" % queue.sys.describe(), flush=True)
    queue.sys.ping()
    worker = subprocess.Popen([sys.executable, "-m", "core4.script.coco",
                               "--worker", "demo"])
    try:
        job = queue.enqueue("core4.queue.helper.job.DummyJob", sleep=sleep)
        print("enqueued DummyJob %s" % job._id, flush=True)
        doc = None
        while True:
            doc = queue.detail(job._id)
            prog = (doc.get("prog") or {}).get("value")
            print("\r%-8s %s" % (doc["state"], progress_bar(prog)),
                  end="", flush=True)
            if doc["state"] not in ("pending", "running"):
                break
            if worker.poll() is not None:
                raise SystemExit("\nthe worker stopped unexpectedly")
            time.sleep(0.2)
        print("\n\njob %s ended %s after %.1f s; its detail:" % (
            doc["_id"], doc["state"], doc.get("runtime") or 0))
        print(display.pretty(doc))
        print("STDOUT:")
        print((queue.stdout(job._id) or "").rstrip())
        print("LOG:")
        for record in job_records(queue.sys, job._id):
            print(format_record(record))
        return 0 if doc["state"] == "complete" else 1
    finally:
        queue.halt()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        hint = embedded_hint(config)
        if hint:
            print(hint, flush=True)


if __name__ == "__main__":
    sys.exit(main())
