"""core4: a job framework for data engineers and data scientists.

Jobs are :class:`core4.queue.job.CoreJob` subclasses, enqueued into MongoDB and
run by workers, each job in its own OS process.
"""

__version__ = "0.1.0"
__project__ = "core4"
