"""Text output of the command line: times, durations, tables, documents."""

import datetime
import pprint

from core4.mongo import elapsed, now, to_datetime

#: time fields of job and daemon documents (datetimes; epoch seconds in a
#: database written by core4 < 0.3 that is not migrated yet)
TIME_FIELDS = ("started_at", "finished_at", "query_at", "zombie_at",
               "wall_at", "killed_at", "removed_at", "inactive_at",
               "heartbeat", "at", "timestamp", "first_started_at")


def iso(value):
    """Format a stored time (a datetime, or legacy epoch seconds) as local
    time ``YYYY-MM-DD HH:MM:SS``, '' for None."""
    if value is None:
        return ""
    return to_datetime(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds):
    """Format seconds (or a timedelta) as ``1d 02:03:04`` / ``02:03:04``,
    '' for None."""
    if seconds is None:
        return ""
    if isinstance(seconds, datetime.timedelta):
        seconds = seconds.total_seconds()
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "%02d:%02d:%02d" % (hours, minutes, secs)
    return "%dd %s" % (days, text) if days else text


def size(number):
    """Format a number of bytes: ``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    value = float(number)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return "%d B" % number if unit == "B" else "%.1f %s" % (value, unit)


def readable(doc):
    """Return a copy of a document with its times as UTC datetimes (also
    the epoch seconds of a database not migrated yet)."""
    if isinstance(doc, dict):
        return {key: (to_datetime(value) if key in TIME_FIELDS
                      and isinstance(value, (int, float))
                      and not isinstance(value, bool)
                      else readable(value))
                for key, value in doc.items()}
    if isinstance(doc, list):
        return [readable(item) for item in doc]
    if isinstance(doc, datetime.datetime):
        # as read (tzinfo bson's FixedOffset), shown as plain UTC
        return to_datetime(doc).astimezone(datetime.timezone.utc)
    return doc


def pretty(doc):
    """Pretty-print a document with readable times."""
    return pprint.pformat(readable(doc), width=100, sort_dicts=True)


def flags(doc):
    """Return the flag letters of a job: Z zombie, W non-stop (wall),
    R removed, K killed."""
    return "".join(letter if doc.get(field) else "."
                   for letter, field in (("Z", "zombie_at"), ("W", "wall_at"),
                                         ("R", "removed_at"),
                                         ("K", "killed_at")))


def table(rows, header):
    """Format rows as left-aligned columns under a header."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows
              else len(str(h)) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return "\n".join(line.rstrip() for line in lines)


def job_rows(docs):
    """Rows of the ``coco --listing`` table."""
    at = now()
    rows = []
    for doc in docs:
        prog = (doc.get("prog") or {}).get("value")
        enq = doc.get("enqueued") or {}
        rows.append([
            doc["_id"], doc["state"], flags(doc),
            "" if prog is None else "%3d%%" % round(prog * 100),
            "%d%s" % (doc.get("priority", 0), "F" if doc.get("force")
                      else ""),
            "%d/%d" % (doc.get("trial", 0), doc.get("attempts", 0)),
            enq.get("username", ""), iso(enq.get("at")),
            duration(max(0.0, elapsed(enq["at"], at))) if enq.get("at")
            else "",
            duration(doc.get("runtime")),
            (doc.get("locked") or {}).get("worker", ""), doc["name"]])
    return rows


JOB_HEADER = ["_id", "state", "flag", "prog", "prio", "trial", "user",
              "enqueued", "age", "runtime", "worker", "name"]


def local_now():
    """Return the local time (for headers)."""
    return datetime.datetime.now().astimezone()
