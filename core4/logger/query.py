"""Reading ``sys.log``: filters, times and the text form of a record.

Used by ``chist`` and by ``coco --detail`` (:func:`job_records`).
"""

import datetime
import re

from core4.mongo import to_datetime

UTC = datetime.timezone.utc
#: level names for ``--level``; a unique prefix (``WARN``, ``crit``) works
LEVELS = (("DEBUG", 10), ("INFO", 20), ("WARNING", 30), ("ERROR", 40),
          ("CRITICAL", 50))
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$", re.IGNORECASE)
_TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: the sort order of records
ORDER = [("created", 1), ("_id", 1)]


#: a date needs its year (a bare number would be a day of this month)
_YEAR = re.compile(r"\d{4}")
_BAD_TIME = ("bad time %r (use an ISO datetime like 2024-05-01T14:30, a "
             "time of day like 14:30, or 30m, 2h, 1d, 1w ago)")


class Moment:
    """One ``--start`` or ``--end`` of chist, parsed: ``kind`` is
    ``relative`` (``value``: seconds), ``time`` (a time of day: ``value``
    is a :class:`datetime.time`) or ``absolute`` (an aware UTC
    datetime)."""

    def __init__(self, kind, value, text):
        self.kind, self.value, self.text = kind, value, text

    @classmethod
    def parse(cls, text):
        """Parse ``text``; raise ValueError with a one-line reason."""
        from dateutil import parser as dateparser
        value = str(text).strip()
        match = _RELATIVE.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
            return cls("relative", seconds, text)
        match = _TIME_OF_DAY.match(value)
        if match:
            hour, minute, second, frac = match.groups()
            try:
                return cls("time", datetime.time(
                    int(hour), int(minute), int(second or 0),
                    int((frac or "0").ljust(6, "0"))), text)
            except ValueError:
                raise ValueError(_BAD_TIME % text) from None
        if not _YEAR.search(value):
            raise ValueError(_BAD_TIME % text)
        try:
            stamp = dateparser.parse(value)
        except (ValueError, OverflowError):
            raise ValueError(_BAD_TIME % text) from None
        if stamp.tzinfo is None:
            stamp = stamp.astimezone()  # naive: local time
        return cls("absolute", stamp.astimezone(UTC), text)


def _on_day(day, time_of_day):
    """The aware UTC datetime of ``time_of_day`` (local) on ``day``."""
    return datetime.datetime.combine(day, time_of_day).astimezone(
        ).astimezone(UTC)


def latest_before(time_of_day, limit, strict=False):
    """The last occurrence of ``time_of_day`` (local) at or before
    ``limit`` (before it with ``strict``)."""
    day = limit.astimezone().date()
    stamp = _on_day(day, time_of_day)
    while stamp > limit or (strict and stamp == limit):
        day -= datetime.timedelta(days=1)
        stamp = _on_day(day, time_of_day)
    return stamp


def first_after(time_of_day, limit):
    """The first occurrence of ``time_of_day`` (local) after ``limit``."""
    day = limit.astimezone().date()
    stamp = _on_day(day, time_of_day)
    while stamp <= limit:
        day += datetime.timedelta(days=1)
        stamp = _on_day(day, time_of_day)
    return stamp


def _back(now, seconds, text):
    try:
        return now - datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("time %r is too far back" % text) from None


def _forward(start, seconds, text):
    try:
        return start + datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("time %r is too far ahead" % text) from None


def parse_range(start=None, end=None, now=None, default=3600.0):
    """Return ``(start, end)`` (aware UTC datetimes, ``end`` None if not
    given) of chist's ``--start`` and ``--end`` texts, as upstream core4
    read them; raise ValueError with a one-line reason if bad.

    * A relative ``start`` (``30m``, ``6h``, ``2d``, ``1w``) counts back
      from ``now``; a relative ``end`` forward from the start.
    * A time of day ``start`` alone is its most recent occurrence (at
      12:00, ``20:00`` is yesterday 20:00). With a time of day ``end`` too,
      the end is its most recent occurrence and the start the last one
      before that end.
    * After an absolute or relative start, a time of day ``end`` is its
      first occurrence after the start.
    * Dates parse loosely (``2018-4-30 8:00``, ``2018 5 1 11:00``), local
      time unless they say otherwise.
    * Without ``start``: ``default`` seconds ago.
    """
    now = now or datetime.datetime.now(UTC)
    first = Moment.parse(start) if start is not None else None
    last = Moment.parse(end) if end is not None else None
    until = None
    if last is not None and last.kind == "absolute":
        until = last.value
    elif (last is not None and last.kind == "time" and first is not None
            and first.kind == "time"):
        until = latest_before(last.value, now)
    if first is None:
        since = _back(now, default, "default")
    elif first.kind == "relative":
        since = _back(now, first.value, first.text)
    elif first.kind == "absolute":
        since = first.value
    elif until is not None:
        since = latest_before(first.value, until, strict=True)
    else:
        since = latest_before(first.value, now)
    if last is not None and until is None:
        if last.kind == "relative":
            until = _forward(since, last.value, last.text)
        else:
            until = first_after(last.value, since)
    if until is not None and until < since:
        raise ValueError("--end %s is before --start %s" % (
            local_time(until), local_time(since)))
    return since, until


def parse_level(text):
    """Return the number of a level name (unique prefix ok) or number."""
    value = str(text).strip()
    if value.isdigit():
        return int(value)
    upper = value.upper()
    found = [number for name, number in LEVELS if name.startswith(upper)]
    if upper and len(found) == 1:
        return found[0]
    raise ValueError("bad level %r (one of %s, or a number)" % (
        text, ", ".join(name for name, _ in LEVELS)))


def compile_message(text, case_sensitive=False):
    """Return the compiled regex (case-insensitive unless
    ``case_sensitive``); ValueError if bad."""
    try:
        return re.compile(text, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise ValueError("bad regular expression %r: %s" % (text, exc)) \
            from None


def build_filter(start=None, end=None, level=None, project=None,
                 qual_name=None, identifier=None, hostname=None,
                 username=None, message=None, case_sensitive=False):
    """Return the ``sys.log`` filter of the given conditions.

    ``start``/``end`` are datetimes (inclusive), ``level`` a number (that
    level and above), ``project`` matches ``project`` and ``project.*``,
    ``qual_name`` is a prefix, ``message`` a regex (case-insensitive unless
    ``case_sensitive``); the other conditions are exact.
    """
    query = {}
    created = {}
    if start is not None:
        created["$gte"] = start
    if end is not None:
        created["$lte"] = end
    if created:
        query["created"] = created
    if level is not None:
        query["levelno"] = {"$gte": int(level)}
    if project:
        query["qual_name"] = {"$regex": "^%s(\\.|$)" % re.escape(project)}
    if qual_name:
        prefix = {"$regex": "^" + re.escape(qual_name)}
        if "qual_name" in query:
            query["$and"] = [{"qual_name": query.pop("qual_name")},
                             {"qual_name": prefix}]
        else:
            query["qual_name"] = prefix
    for key, value in (("identifier", identifier), ("hostname", hostname),
                       ("username", username)):
        if value is not None:
            query[key] = str(value)
    if message:
        compile_message(message, case_sensitive)
        query["message"] = {"$regex": message}
        if not case_sensitive:
            query["message"]["$options"] = "i"
    return query


def job_records(system, job_id, limit=1000):
    """Return the ``sys.log`` records of job ``job_id`` sorted by
    ``created`` (the latest ``limit`` of them, so a failure is included).

    ``system`` is a :class:`core4.mongo.SystemCollections`.
    """
    docs = list(system.log.find({"identifier": str(job_id)}).sort(
        [("created", -1), ("_id", -1)]).limit(int(limit)))
    docs.reverse()
    return docs


def local_time(value):
    """Format a stored ``created`` as local time with milliseconds."""
    if value is None:
        return ""
    stamp = to_datetime(value).astimezone()
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + "%03d" % (
        stamp.microsecond // 1000)


def format_record(doc, tab=False):
    """Return the text of a ``sys.log`` record (one line, plus indented
    lines of a multi-line message and of its traceback).

    ``created level qual_name/identifier message``; with ``tab``:
    ``created<TAB>level<TAB>qual_name<TAB>identifier<TAB>message`` and the
    extra lines start with a TAB.
    """
    message = str(doc.get("message", ""))
    first, *more = message.split("\n") or [""]
    created = local_time(doc.get("created"))
    level = str(doc.get("level") or doc.get("levelno") or "")
    qual_name = str(doc.get("qual_name") or "")
    ident = str(doc.get("identifier") or "")
    if tab:
        lines = ["\t".join((created, level, qual_name, ident,
                            first.replace("\t", " ")))]
        indent = "\t"
    else:
        lines = ["%s %-8s %s/%s %s" % (created, level, qual_name, ident,
                                       first)]
        indent = "    "
    lines.extend(indent + line for line in more)
    exc = doc.get("exception")
    if isinstance(exc, dict):
        text = exc.get("text") or []
        if isinstance(text, str):
            text = text.splitlines()
        lines.extend(indent + str(line).rstrip("\n") for line in text)
    return "\n".join(line.rstrip() for line in lines)


def plan_index(explained):
    """The index a query used, from the answer of ``explain`` (MongoDB's
    ``winningPlan`` stages, or NX-27017's plan text): its name, ``none
    (collection scan)``, or ``unknown``."""
    plan = (explained or {}).get("queryPlanner", {}).get("winningPlan")
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("indexName"):
                found.append(node["indexName"])
            elif node.get("stage") == "COLLSCAN":
                found.append(None)
            detail = node.get("detail")
            if isinstance(detail, str):
                match = re.search(r"USING (?:COVERING )?INDEX (\S+)", detail)
                if match:
                    found.append(match.group(1))
                elif detail.startswith("SCAN"):
                    found.append(None)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(plan)
    if not found:
        return "unknown"
    names = [name for name in found if name]
    return ", ".join(dict.fromkeys(names)) if names \
        else "none (collection scan)"
