"""Job classes run in-process by tests/test_execute.py.

The module-level containers are how a job reports what it saw to the test:
execute() runs the job in the test's own process.
"""

import os
import time

from core4.queue.job import CoreAbstractMixin, CoreJob

SEEN = []
#: set by the test to the sys_queue collection (pymongo)
COLLECTION = None


class RecordJob(CoreJob):
    author = "mra"

    def execute(self, **kwargs):
        SEEN.append({"pid": os.getpid(), "kwargs": kwargs, "_id": self._id,
                     "trial": self.trial})
        print("hello from RecordJob %s" % self._id)


class FailJob(CoreJob):
    author = "mra"

    def execute(self, **kwargs):
        raise ValueError("boom 42")


class DeferJob(CoreJob):
    author = "mra"

    def execute(self, **kwargs):
        self.defer("not yet")


class SlowDeferJob(CoreJob):
    """Runs longer than its defer_max, then defers."""
    author = "mra"

    def execute(self, **kwargs):
        deadline = time.time() + self.defer_max
        while time.time() <= deadline:
            time.sleep(0.005)
        SEEN.append(time.time())
        self.defer("still waiting")


class SignatureJob(CoreJob):
    author = "mra"

    def execute(self, a):
        SEEN.append(a)


class ProgressJob(CoreJob):
    author = "mra"
    progress_interval = 1000

    def execute(self, **kwargs):
        for value, force in ((0.1, False), (0.2, False), (0.3, True),
                             (0.4, False)):
            returned = self.progress(value, "at %s" % value, force=force)
            stored = COLLECTION.find_one({"_id": self._id})["prog"]
            SEEN.append((value, returned, stored["value"],
                         stored["message"]))


class LogJob(CoreJob):
    author = "mra"

    def execute(self, **kwargs):
        SEEN.append(self._id)
        self.logger.info("hello from LogJob")
        self.logger.warning("warning from LogJob")


class NoAuthorJob(RecordJob):
    """Inherits author: cannot run."""


class AbstractRunJob(CoreAbstractMixin, RecordJob):
    author = "mra"
