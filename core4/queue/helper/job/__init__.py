"""Jobs that ship with core4 (``core4.queue.helper.job.DummyJob``), the
base class of jobs that process files
(``core4.queue.helper.job.CoreLoadJob``) and the services
(``core4.queue.helper.job.HttpService``, ``JupyterService``).

The services are imported when first named: they need the HTTP client
modules, which a job process running ``DummyJob`` should not load."""

from core4.queue.helper.job.base import CoreLoadJob
from core4.queue.helper.job.example import DummyJob

__all__ = ["CoreLoadJob", "DummyJob", "HttpService", "JupyterService"]

_LAZY = {"HttpService", "JupyterService"}


def __getattr__(name):
    if name in _LAZY:
        from core4.queue.helper.job import service
        return getattr(service, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
