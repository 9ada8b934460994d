"""chist: the records of ``sys.log``.

``chist [--start T] [--end T] [--level L] [--project P] [--qual_name Q]
[--identifier ID] [--hostname H] [--username U] [--message REGEX]
[--follow [SECONDS]] [--tab]``

Times are ISO datetimes, times of day (today, local time) or relative
(``30m``, ``2h``, ``1d``, ``1w`` ago); the default start is one hour ago.
Every user mistake ends with one line on stderr and exit code 2.
"""

import argparse
import datetime
import os
import signal
import sys
import threading

import pymongo.errors

from core4.error import Core4UserError
from core4.logger import query

#: seconds ``--follow`` looks back at each poll (by the time in ``_id``,
#: made when a record is logged), so records written a little late (a busy
#: writer, a clock a few seconds behind) are still shown
FOLLOW_LOOKBACK = 10.0


class ChistParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2."""

    def error(self, message):
        self.exit(2, "%s: %s (see %s --help)\n" % (self.prog, message,
                                                  self.prog))


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "SECONDS must be a number, not %r" % text) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            "SECONDS must be more than 0, not %r" % text)
    return value


def build_parser():
    """Return the ``chist`` argument parser."""
    parser = ChistParser(
        prog="chist", description="Show the log records of sys.log. Times T "
        "are ISO datetimes (2024-05-01T14:30), times of day (14:30, today) "
        "or relative (30m, 2h, 1d, 1w ago).")
    add = parser.add_argument
    add("--start", metavar="T", help="records from T (default: 1h ago)")
    add("--end", metavar="T", help="records until T")
    add("--level", metavar="L",
        help="records of level L and above (name, prefix or number)")
    add("--project", metavar="P", help="records of project P")
    add("--qual_name", metavar="Q",
        help="records whose qual_name is or starts with Q")
    add("--identifier", metavar="ID",
        help="records of this identifier (e.g. a job id)")
    add("--hostname", metavar="H", help="records of host H")
    add("--username", metavar="U", help="records of user U")
    add("--message", metavar="REGEX",
        help="records whose message matches REGEX (case-insensitive)")
    add("--follow", nargs="?", const=1.0, type=_seconds, metavar="SECONDS",
        help="then show new records, polling every SECONDS (default 1), "
        "until Ctrl-C")
    add("--tab", action="store_true", help="tab-separated output")
    return parser


def build_query(ns, now=None):
    """Return the filter of the parsed options; ValueError if bad."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    start = query.parse_time(ns.start, now) if ns.start else \
        now - datetime.timedelta(hours=1)
    end = query.parse_time(ns.end, now) if ns.end is not None else None
    if end is not None and end < start:
        raise ValueError("--end %s is before --start %s" % (
            query.local_time(end), query.local_time(start)))
    level = query.parse_level(ns.level) if ns.level is not None else None
    if ns.message is not None:
        query.compile_message(ns.message)
    return query.build_filter(
        start=start, end=end, level=level, project=ns.project,
        qual_name=ns.qual_name, identifier=ns.identifier,
        hostname=ns.hostname, username=ns.username, message=ns.message)


def _show(docs, tab):
    for doc in docs:
        sys.stdout.write(query.format_record(doc, tab) + "\n")
    sys.stdout.flush()


def follow(collection, flt, seen, interval, tab):
    """Print records written from now on matching ``flt`` until Ctrl-C
    (or SIGTERM), which ends it after the poll under way.

    New records are found by their ``_id`` (made when they are logged),
    looking back :data:`FOLLOW_LOOKBACK` seconds at each poll; ``seen``
    holds the ids already printed.
    """
    from bson import ObjectId
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()  # ends the loop between polls, never inside a query

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    while not stop.wait(interval):
        since = ObjectId.from_datetime(
            datetime.datetime.now(datetime.timezone.utc)
            - datetime.timedelta(seconds=FOLLOW_LOOKBACK))
        docs = [doc for doc in collection.find(
            dict(flt, _id={"$gte": since})).sort(query.ORDER)
            if doc["_id"] not in seen]
        _show(docs, tab)
        seen.difference_update({i for i in seen if i < since})
        seen.update(doc["_id"] for doc in docs)


def _fail(message):
    print("chist: %s" % message, file=sys.stderr)
    return 2


def main(argv=None):
    """Entry point of ``chist``; returns the exit code."""
    from core4.config import get_config
    from core4.mongo.connection import (SystemCollections, close_clients,
                                        translate_errors)
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.follow is not None and ns.end is not None:
        parser.error("--end goes not with --follow")
    try:
        flt = build_query(ns)
    except ValueError as exc:
        return _fail(exc)
    try:
        try:
            system = SystemCollections(get_config())
            with translate_errors(system.describe()):
                collection = system.log
                docs = list(collection.find(flt).sort(query.ORDER))
                _show(docs, ns.tab)
                if ns.follow is not None:
                    follow(collection, flt, {d["_id"] for d in docs},
                           ns.follow, ns.tab)
        finally:
            close_clients()
    except Core4UserError as exc:
        return _fail(str(exc).split("\n")[0])
    except pymongo.errors.PyMongoError as exc:
        return _fail("MongoDB error: %s" % str(exc).split("\n")[0].split(
            ", full error:")[0])
    except KeyboardInterrupt:
        return 0 if ns.follow is not None else 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    return 0


def _quiet_stdout():
    """Point stdout at /dev/null (its reader went away: no error at exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def run():
    """Console entry point: like :func:`main`, but skips pymongo's slow
    interpreter-shutdown hooks once all output is flushed."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            _quiet_stdout()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
