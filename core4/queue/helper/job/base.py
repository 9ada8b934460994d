"""Base classes for jobs (upstream compatible names)."""

from core4.queue.job import CoreAbstractMixin

#: deprecated alias of :class:`core4.queue.job.CoreAbstractMixin`
CoreAbstractJobMixin = CoreAbstractMixin

__all__ = ["CoreAbstractMixin", "CoreAbstractJobMixin"]
