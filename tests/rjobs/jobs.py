"""Job classes of tests/test_remove_run.py, tests/test_done_records.py and
tests/test_parent_id.py (run by real ``coco --worker`` processes)."""

import os
import time

from core4.queue.job import CoreAbstractMixin, CoreJob


def collection(name):
    """A collection of the test's database, opened in the job process."""
    from core4.config import get_config
    from core4.mongo import SystemCollections
    return SystemCollections(get_config()).database()[name]


def report(key, **fields):
    """Merge ``fields`` into the ``r_report`` document ``key``."""
    collection("r_report").update_one({"_id": key}, {"$set": fields},
                                      upsert=True)


def released(key):
    """True once the test released ``key`` (``r_release`` has it)."""
    return collection("r_release").find_one({"_id": key}) is not None


class GateJob(CoreJob):
    """Report its start, wait until the test releases ``key`` (at most
    ``limit`` seconds), report its end; then fail if ``fail``."""
    author = "test"

    def execute(self, key="gate", fail=False, limit=60, **kwargs):
        report(key, start=time.time(), pid=os.getpid(), trial=self.trial)
        deadline = time.monotonic() + limit
        while not released(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        report(key, end=time.time())
        if fail:
            raise RuntimeError("gate %s fails" % key)


class CompleteJob(CoreJob):
    """Complete at once."""
    author = "test"

    def execute(self, **kwargs):
        pass


class FailingJob(CoreJob):
    """Fail in every attempt."""
    author = "test"

    def execute(self, **kwargs):
        raise RuntimeError("this job fails")


class DeferringJob(CoreJob):
    """Defer in every run."""
    author = "test"

    def execute(self, **kwargs):
        self.defer("not yet")


class ParentIdJob(CoreJob):
    """Report ``self.enqueued["parent_id"]`` as the job sees it (under
    ``key`` and the trial); the first trial fails with ``fail_first``."""
    author = "test"

    def execute(self, key="parent", fail_first=False, **kwargs):
        report("%s-%d" % (key, self.trial),
               has_key="parent_id" in self.enqueued,
               parent_id=self.enqueued.get("parent_id"))
        if fail_first and self.trial == 1:
            raise RuntimeError("first trial fails")


class ChainingJob(CoreJob):
    """Complete; then its chain enqueues a :class:`ParentIdJob`."""
    author = "test"
    chain = ["tests.rjobs.jobs.ParentIdJob"]

    def execute(self, **kwargs):
        pass


class NoAuthorJob(CoreJob):
    """Has no author: invalid."""

    def execute(self, **kwargs):
        pass


class NoneDeferTimeJob(CoreJob):
    """Sets a number property to None explicitly: invalid (as upstream)."""
    author = "test"
    defer_time = None

    def execute(self, **kwargs):
        pass


class AbstractBaseJob(CoreAbstractMixin, CoreJob):
    """An abstract job: a base for others, not enqueueable."""
    author = "test"

    def execute(self, **kwargs):
        pass


class NotAJob:
    """A class that is not derived from CoreJob."""
    author = "test"

    def execute(self, **kwargs):
        pass
