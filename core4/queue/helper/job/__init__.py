"""Jobs that ship with core4 (``core4.queue.helper.job.DummyJob``)."""

from core4.queue.helper.job.example import DummyJob

__all__ = ["DummyJob"]
