"""The demo of ``scripts/run``: DummyJob from enqueue to completion."""

import sys

from core4.config import get_config
from core4.mongo import SystemCollections
from core4.queue.helper.functool import execute
from core4.queue.helper.job import DummyJob
from core4.script import display


def main():
    """Run DummyJob once in this process and print its final document."""
    config = get_config()
    system = SystemCollections(config)
    print("core4 demo: database %s" % system.describe())
    system.ping()
    doc = execute(DummyJob, sleep=float(sys.argv[1]) if len(sys.argv) > 1
                  else 3)
    print("\njob %s ended %s after %.1f s; its detail:" % (
        doc["_id"], doc["state"], doc["runtime"]))
    print(display.pretty(doc))
    return 0 if doc["state"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
