"""Job classes with schedules, enqueued by the scheduler in
tests/test_scheduler.py (no worker runs them)."""

from core4.queue.job import CoreAbstractMixin, CoreJob


class _Noop(CoreAbstractMixin, CoreJob):

    def execute(self, **kwargs):
        pass


class HourlyJob(_Noop):
    """Fires at the top of every hour."""
    author = "test"
    schedule = "0 * * * *"


class TwoHourlyJob(_Noop):
    """Fires every two hours."""
    author = "test"
    schedule = "0 */2 * * *"


class MinutelyJob(_Noop):
    """Fires every minute."""
    author = "test"
    schedule = "* * * * *"


class DailyJob(_Noop):
    """Fires at midnight."""
    author = "test"
    schedule = "0 0 * * *"


class BadCronJob(_Noop):
    """Has an invalid cron expression: the registry marks it invalid."""
    author = "test"
    schedule = "61 * * * *"


class PlainJob(_Noop):
    """No schedule."""
    author = "test"
