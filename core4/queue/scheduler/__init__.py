"""The scheduler (cron): when scheduled jobs are due, one leader among
the schedulers, and catch-up of missed fire times.

* :mod:`core4.queue.scheduler.scheduler`: the scheduler daemon
  (``coco --scheduler``)
* :mod:`core4.queue.scheduler.schedule`: fire times and catch-up policies
* :mod:`core4.queue.scheduler.enqueue`: the leader enqueues due fire times
* :mod:`core4.queue.scheduler.markers`: each fire time enqueued at most once
* :mod:`core4.queue.scheduler.lease`: the leader's lease
"""
