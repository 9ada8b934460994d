"""Jobs that ship with core4 (``core4.queue.helper.job.DummyJob``), the
base class of jobs that process files
(``core4.queue.helper.job.CoreLoadJob``) and the services
(``core4.queue.helper.job.HttpService``, ``JupyterService``)."""

from core4.queue.helper.job.base import CoreLoadJob
from core4.queue.helper.job.example import DummyJob
from core4.queue.helper.job.service import HttpService, JupyterService

__all__ = ["CoreLoadJob", "DummyJob", "HttpService", "JupyterService"]
