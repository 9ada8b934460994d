"""Pure cron logic of the scheduler: fire times and catch-up policies.

Nothing here touches the database or the clock, so every rule can be tested
with plain datetimes. Cron expressions are evaluated by ``croniter`` in the
scheduler's time zone (``scheduler.timezone``, default ``UTC``); daylight
saving transitions behave as croniter makes them (a wall time skipped in
spring does not fire, a repeated one in autumn may fire twice).
"""

import datetime
import zoneinfo

import croniter

from core4.error import Core4UserError

UTC = datetime.timezone.utc

#: catch-up policies for fire times missed while no scheduler was leading
COALESCE, ALL, SKIP = "coalesce", "all", "skip"
POLICIES = (COALESCE, ALL, SKIP)

#: most missed fire times the ``all`` policy runs (the oldest are dropped)
MAX_CATCHUP = 100

_SECOND = datetime.timedelta(seconds=1)


def zone(name):
    """Return the time zone ``name`` (a ``zoneinfo`` key such as ``UTC`` or
    ``Europe/Berlin``); raise a clear :class:`Core4UserError` if unknown."""
    if isinstance(name, datetime.tzinfo):
        return name
    try:
        return zoneinfo.ZoneInfo(str(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise Core4UserError("scheduler.timezone: unknown time zone %r (%s)"
                             % (name, exc)) from None


def check_expression(expression):
    """Return None if ``expression`` is a cron expression, else why not."""
    if not isinstance(expression, str) or not expression.strip():
        return "schedule must be a cron expression, got %r" % (expression,)
    try:
        if not croniter.croniter.is_valid(expression):
            return "invalid cron expression %r" % expression
        croniter.croniter(expression)
    except Exception as exc:
        return "invalid cron expression %r: %s" % (expression, exc)
    return None


def _aware(value, tz):
    """An epoch float or a datetime (naive = UTC) as an aware datetime in
    ``tz``."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(tz)
    return datetime.datetime.fromtimestamp(float(value), tz=tz)


def fire_times(expression, after, until, tz=UTC, limit=None):
    """Return the fire times of ``expression`` with ``after < t <= until``
    as aware datetimes in ``tz``, oldest first (croniter's own sequence).

    ``after`` and ``until`` are epoch seconds or datetimes. With ``limit``
    only the latest ``limit`` fire times are returned, found without
    walking the whole span (a long downtime of an every-minute job costs
    no more than a short one).
    """
    tz = zone(tz)
    start, end = _aware(after, tz), _aware(until, tz)
    if end <= start:
        return []
    if limit is not None:
        if limit <= 0:
            return []
        # walk back from the end to where the latest ``limit`` begin ...
        back = croniter.croniter(expression, end + _SECOND)
        found = 0
        while True:
            fire = back.get_prev(datetime.datetime)
            if fire <= start:
                break
            if fire > end:
                continue
            found += 1
            if found == limit:
                # ... and take croniter's forward sequence from there
                start = max(start, fire - _SECOND)
                break
    result = []
    ahead = croniter.croniter(expression, start)
    while True:
        fire = ahead.get_next(datetime.datetime)
        if fire > end:
            break
        if fire > _aware(after, tz):
            result.append(fire)
    if limit is not None:
        result = result[-limit:]
    return result


def next_fire(expression, after, tz=UTC):
    """Return the first fire time after ``after`` as epoch seconds."""
    tz = zone(tz)
    it = croniter.croniter(expression, _aware(after, tz))
    return it.get_next(datetime.datetime).timestamp()


class Due(tuple):
    """What :func:`due` found: ``fires`` to enqueue (oldest first),
    ``newest`` fire time (handled afterwards) and ``dropped`` (True if
    missed fire times are left out by the policy)."""

    __slots__ = ()

    def __new__(cls, fires, newest, dropped):
        return super().__new__(cls, (fires, newest, dropped))

    fires = property(lambda self: self[0])
    newest = property(lambda self: self[1])
    dropped = property(lambda self: self[2])


def due(expression, last, now, policy=COALESCE, tz=UTC, tolerance=0.0,
        limit=MAX_CATCHUP):
    """Return the :class:`Due` fire times of a job last handled at ``last``.

    ``newest`` is the latest fire time in ``(last, now]`` (None if there is
    none): everything up to it counts as handled afterwards. ``fires`` are
    the fire times to enqueue, oldest first:

    * ``coalesce`` — the latest one only (one run for all missed);
    * ``all`` — every one, at most ``limit`` (the latest);
    * ``skip`` — the latest one if it is at most ``tolerance`` seconds
      late (fire times missed by a downtime are dropped).
    """
    if policy == ALL:
        fires = fire_times(expression, last, now, tz, limit=limit + 1)
        dropped = len(fires) > limit
        fires = fires[-limit:] if limit else []
        return Due(fires, fires[-1] if fires else None, dropped)
    latest = fire_times(expression, last, now, tz, limit=2)
    if not latest:
        return Due([], None, False)
    newest = latest[-1]
    late = _aware(now, UTC).timestamp() - newest.timestamp()
    if policy == SKIP and late > tolerance:
        return Due([], newest, True)
    return Due([newest], newest, len(latest) > 1)
