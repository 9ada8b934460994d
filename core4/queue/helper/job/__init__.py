"""Jobs that ship with core4 (``core4.queue.helper.job.DummyJob``) and
the base class of jobs that process files
(``core4.queue.helper.job.CoreLoadJob``)."""

from core4.queue.helper.job.base import CoreLoadJob
from core4.queue.helper.job.example import DummyJob

__all__ = ["CoreLoadJob", "DummyJob"]
