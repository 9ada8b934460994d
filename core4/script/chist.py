"""chist: the records of ``sys.log``.

``chist [--start T] [--end T] [--level L] [--project P] [--qual_name Q]
[--identifier ID] [--hostname H] [--username U] [--message REGEX]
[--case-sensitive] [--explain] [--follow [SECONDS]] [--tab]``

Times are read as upstream core4 read them (see :data:`TIME_RULES` and
:func:`core4.logger.query.parse_range`); the default start is one hour
ago. Every user mistake ends with one line on stderr and exit code 2.
"""

import argparse
import datetime
import os
import signal
import sys
import threading

import pymongo.errors
from bson import json_util

from core4.error import Core4UserError
from core4.logger import query

#: seconds ``--follow`` looks back at each poll (by the time in ``_id``,
#: made when a record is logged), so records written a little late (a busy
#: writer, a clock a few seconds behind) are still shown
FOLLOW_LOOKBACK = 10.0

#: how --start and --end are read (chist --help)
TIME_RULES = """\
times T (local time unless a date says otherwise):
  30m, 6h, 2d, 1w       relative: --start counts back from now, --end
                        forward from the start (--start 6h --end 2h at
                        12:00 is 06:00-08:00)
  14:30, 8:00:15        time of day: --start alone is its most recent
                        occurrence (at 12:00, 20:00 is yesterday 20:00,
                        11:00 today); with two times of day --end is its
                        most recent occurrence and --start the last one
                        before that end (at 12:00, 13:00-08:00 is
                        yesterday 13:00 to today 08:00, 08:00-18:00 is
                        yesterday); after an absolute or relative --start,
                        --end is its first occurrence after the start
                        (6h-05:00 ends tomorrow 05:00)
  2018-4-30 8:00, 2018 5 1 11:00, 2024-05-01T14:30+02:00
                        a date (with its year), parsed loosely
--start defaults to 1h ago, --end to open (now); an --end before the
--start is an error. --message is a regular expression, not case-sensitive
unless --case-sensitive."""


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
        prog="chist", description="Show the log records of sys.log.",
        epilog=TIME_RULES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
        help="records whose message matches REGEX (not case-sensitive "
        "unless --case-sensitive)")
    add("--case-sensitive", action="store_true",
        help="--message is case-sensitive")
    add("--explain", action="store_true",
        help="print the query, the index it uses and the number of records "
        "to stderr")
    add("--follow", nargs="?", const=1.0, type=_seconds, metavar="SECONDS",
        help="then show new records, polling every SECONDS (default 1), "
        "until Ctrl-C")
    add("--tab", action="store_true", help="tab-separated output")
    return parser


def build_query(ns, now=None):
    """Return the filter of the parsed options; ValueError if bad."""
    start, end = query.parse_range(ns.start or None, ns.end, now)
    level = query.parse_level(ns.level) if ns.level is not None else None
    if ns.message is not None:
        query.compile_message(ns.message, ns.case_sensitive)
    return query.build_filter(
        start=start, end=end, level=level, project=ns.project,
        qual_name=ns.qual_name, identifier=ns.identifier,
        hostname=ns.hostname, username=ns.username, message=ns.message,
        case_sensitive=ns.case_sensitive)


def explain(collection, flt):
    """Print the query, the index it uses and its count to stderr."""
    try:
        index = query.plan_index(
            collection.find(flt).sort(query.ORDER).explain())
    except pymongo.errors.OperationFailure as exc:
        index = "unknown (%s)" % str(exc).split(", full error:")[0]
    print("query: %s" % json_util.dumps(
        {"filter": flt, "sort": dict(query.ORDER)},
        json_options=json_util.RELAXED_JSON_OPTIONS), file=sys.stderr)
    print("index: %s" % index, file=sys.stderr)
    print("count: %d" % collection.count_documents(flt), file=sys.stderr)


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
                if ns.explain:
                    explain(collection, flt)
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
