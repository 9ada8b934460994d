"""Job classes for tests/test_dependency.py (dependencies, chains, events).

Jobs that need the test's attention use collections of the test's database
(``d_flags`` counters, ``d_gate`` documents), opened in the job process.
"""

import time

from core4.queue.job import CoreJob

J = "tests.djobs.j."


def collection(name):
    """A collection of the test's database, opened in the job process."""
    from core4.config import get_config
    from core4.mongo import SystemCollections
    return SystemCollections(get_config()).database()[name]


def bump(key):
    """Increment the counter ``key`` in ``d_flags``; return the new value."""
    doc = collection("d_flags").find_one_and_update(
        {"_id": key}, {"$inc": {"n": 1}}, upsert=True, return_document=True)
    return doc["n"]


def wait_gate(key, timeout=30.0):
    """Block until the test inserts ``{"_id": key}`` into ``d_gate``."""
    gate = collection("d_gate")
    deadline = time.monotonic() + timeout
    while gate.find_one({"_id": key}) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("gate %s never opened" % key)
        time.sleep(0.05)


class A(CoreJob):
    """Completes."""
    author = "test"

    def execute(self, **kwargs):
        pass


class B(CoreJob):
    """Depends on A by name."""
    author = "test"
    dependency = [J + "A"]

    def execute(self, **kwargs):
        pass


class C(CoreJob):
    """Completes (chain target, dependent with enqueue-time dependency)."""
    author = "test"

    def execute(self, **kwargs):
        pass


class D(CoreJob):
    """Completes (chain target of a failing job)."""
    author = "test"

    def execute(self, **kwargs):
        pass


class Gated(CoreJob):
    """Completes once the test opens the gate ``key``."""
    author = "test"

    def execute(self, key="gate", **kwargs):
        wait_gate(key)


class Fail(CoreJob):
    """Always fails; one attempt, so it ends in error."""
    author = "test"
    attempts = 1

    def execute(self, **kwargs):
        raise RuntimeError("fail on purpose")


class OnFail(CoreJob):
    """Depends on Fail by name."""
    author = "test"
    dependency = [J + "Fail"]

    def execute(self, **kwargs):
        pass


class Killed(CoreJob):
    """Killed by the test while pending."""
    author = "test"

    def execute(self, **kwargs):
        pass


class OnKilled(CoreJob):
    """Depends on Killed by name."""
    author = "test"
    dependency = [J + "Killed"]

    def execute(self, **kwargs):
        pass


class Flaky(CoreJob):
    """Fails on its first run (error: one attempt); later runs complete
    once the gate ``flaky`` is open."""
    author = "test"
    attempts = 1

    def execute(self, **kwargs):
        if bump("flaky") == 1:
            raise RuntimeError("flaky on purpose")
        wait_gate("flaky")


class OnFlaky(CoreJob):
    """Depends on Flaky by name."""
    author = "test"
    dependency = [J + "Flaky"]

    def execute(self, **kwargs):
        pass


class Chained(CoreJob):
    """Chains C."""
    author = "test"
    chain = [J + "C"]

    def execute(self, **kwargs):
        pass


class FailChained(CoreJob):
    """Fails (error), chains D."""
    author = "test"
    attempts = 1
    chain = [J + "D"]

    def execute(self, **kwargs):
        raise RuntimeError("fail on purpose")


class CycX(CoreJob):
    """Chain cycle with CycY."""
    author = "test"
    chain = [J + "CycY"]

    def execute(self, **kwargs):
        pass


class CycY(CoreJob):
    author = "test"
    chain = [J + "CycX"]

    def execute(self, **kwargs):
        pass


class CycP(CoreJob):
    """Dependency cycle with CycQ."""
    author = "test"
    dependency = [J + "CycQ"]

    def execute(self, **kwargs):
        pass


class CycQ(CoreJob):
    author = "test"
    dependency = [J + "CycP"]

    def execute(self, **kwargs):
        pass
