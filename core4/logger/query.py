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


def parse_time(text, now=None):
    """Return the aware datetime of ``text``; raise ValueError if bad.

    ``text`` is relative to ``now`` (``90s``, ``30m``, ``2h``, ``1d``,
    ``1w``: that long ago), a time of day (``14:30``, ``14:30:15``: today,
    local time) or an ISO datetime (``2024-05-01``, ``2024-05-01T14:30``,
    ``2024-05-01 14:30:00+02:00``; without offset: local time).
    """
    value = str(text).strip()
    now = now or datetime.datetime.now(UTC)
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        try:
            return now - datetime.timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError("time %r is too far back" % text) from None
    match = _TIME_OF_DAY.match(value)
    try:
        if match:
            hour, minute, second, frac = match.groups()
            local = now.astimezone()
            return local.replace(
                hour=int(hour), minute=int(minute), second=int(second or 0),
                microsecond=int((frac or "0").ljust(6, "0")))
        stamp = datetime.datetime.fromisoformat(value)
    except ValueError:
        stamp = None
    if stamp is None or not value:
        raise ValueError(
            "bad time %r (use an ISO datetime like 2024-05-01T14:30, a time "
            "of day like 14:30, or 30m, 2h, 1d, 1w ago)" % text)
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()  # naive: local time
    return stamp.astimezone(UTC)


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


def compile_message(text):
    """Return the compiled case-insensitive regex; ValueError if bad."""
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ValueError("bad regular expression %r: %s" % (text, exc)) \
            from None


def build_filter(start=None, end=None, level=None, project=None,
                 qual_name=None, identifier=None, hostname=None,
                 username=None, message=None):
    """Return the ``sys.log`` filter of the given conditions.

    ``start``/``end`` are datetimes (inclusive), ``level`` a number (that
    level and above), ``project`` matches ``project`` and ``project.*``,
    ``qual_name`` is a prefix, ``message`` a regex (case-insensitive); the
    other conditions are exact.
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
        compile_message(message)
        query["message"] = {"$regex": message, "$options": "i"}
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
