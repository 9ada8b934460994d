"""Job classes for the property, validation and loader tests."""

from core4.queue.job import CoreAbstractMixin, CoreJob


class MyJob(CoreJob):
    author = "mra"

    def execute(self, **kwargs):
        pass


class ClassJob(CoreJob):
    """Declares some properties as class attributes."""
    author = "mra"
    attempts = 2
    priority = 5
    defer_time = 10
    error_time = 20

    def execute(self, **kwargs):
        pass


class Parent(CoreJob):
    author = "mra"
    attempts = 3
    schedule = "0 * * * *"
    dependency = ["tests.jobs.mod.MyJob"]
    chain = ["tests.jobs.mod.ClassJob"]
    tag = ["parent"]

    def execute(self, **kwargs):
        pass


class Child(Parent):
    author = "mrb"


class NoAuthorChild(Parent):
    """Inherits ``author`` only: must fail validate()."""


class CronJob(MyJob):
    author = "mra"
    schedule = "*/5 * * * *"


class AbstractJob(CoreAbstractMixin, CoreJob):
    author = "mra"

    def execute(self, **kwargs):
        pass


class ConcreteJob(AbstractJob):
    author = "mra"


class NotAJob:
    author = "mra"

    def execute(self, **kwargs):
        pass
