"""Job classes for tests/test_worker.py (run by ``coco --worker``)."""

import os
import subprocess
import sys
import time

from core4.queue.job import CoreJob


def collection(name):
    """A collection of the test's database, opened in the job process."""
    from core4.config import get_config
    from core4.mongo import SystemCollections
    return SystemCollections(get_config()).database()[name]


def report(key, **fields):
    """Merge ``fields`` into the ``w_report`` document ``key``."""
    collection("w_report").update_one({"_id": key}, {"$set": fields},
                                      upsert=True)


def bump(key):
    """Increment the counter ``key`` in ``w_flags``; return the new value."""
    doc = collection("w_flags").find_one_and_update(
        {"_id": key}, {"$inc": {"n": 1}}, upsert=True,
        return_document=True)
    return doc["n"]


class PidJob(CoreJob):
    """Record the job process' pid, process group and session."""
    author = "test"

    def execute(self, key="pid", **kwargs):
        report(key, pid=os.getpid(), pgid=os.getpgid(0), sid=os.getsid(0),
               ppid=os.getppid())


class SleepJob(CoreJob):
    """Record start and end (epoch seconds) around a sleep."""
    author = "test"

    def execute(self, key="sleep", secs=1.0, **kwargs):
        report(key, start=time.time(), pid=os.getpid())
        time.sleep(secs)
        report(key, end=time.time())


class OutputJob(CoreJob):
    """Write to stdout and stderr, and start a child that does too."""
    author = "test"

    def execute(self, **kwargs):
        print("job-out")
        print("job-err", file=sys.stderr)
        subprocess.run(["sh", "-c", "echo child-out; echo child-err >&2"],
                       check=True)


class BinaryJob(CoreJob):
    """Write bytes that are not UTF-8 to file descriptor 1."""
    author = "test"

    def execute(self, **kwargs):
        sys.stdout.flush()
        os.write(1, b"bin-start \xff\xfe\x80 bin-end\n")


class BigOutputJob(CoreJob):
    """Print ``size`` bytes between a head and an end mark."""
    author = "test"

    def execute(self, size=10000, **kwargs):
        print("HEAD-MARK")
        line = "y" * 99
        for _ in range(size // 100):
            print(line)
        print("END-MARK")


class FailJob(CoreJob):
    """Fail always, or only in the first attempt (counter in w_flags)."""
    author = "test"

    def execute(self, key="fail", always=False, **kwargs):
        n = bump(key)
        report(key, runs=n)
        if always or n == 1:
            raise RuntimeError("attempt %d of %s fails" % (n, key))


class DeferJob(CoreJob):
    """Always defer."""
    author = "test"

    def execute(self, key="defer", **kwargs):
        bump(key)
        self.defer("not yet")


class ArgJob(CoreJob):
    """Accepts only the argument ``a``."""
    author = "test"

    def execute(self, a):
        pass


class ChildSleepJob(CoreJob):
    """Start ``sleep 1000``, record both pids and wait forever."""
    author = "test"

    def execute(self, key="child", **kwargs):
        child = subprocess.Popen(["sleep", "1000"])
        report(key, pid=os.getpid(), child=child.pid)
        while True:
            time.sleep(0.2)


class SuicideJob(CoreJob):
    """kill -9 its own process."""
    author = "test"

    def execute(self, **kwargs):
        sys.stdout.flush()
        os.kill(os.getpid(), 9)


class StickyJob(CoreJob):
    """The first run (counter in w_flags) blocks; later runs complete."""
    author = "test"

    def execute(self, key="sticky", **kwargs):
        n = bump(key)
        report(key, runs=n, pid=os.getpid())
        if n == 1:
            while True:
                time.sleep(0.2)


class StubbornJob(CoreJob):
    """Ignore SIGTERM and run until killed."""
    author = "test"

    def execute(self, key="stubborn", **kwargs):
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        report(key, pid=os.getpid(), start=time.time())
        while True:
            time.sleep(0.2)
