"""Tests of chist: sys.log records by time, level, name, identifier, host,
user and message; tab output, tracebacks, --follow and one-line errors.
chist runs as a real subprocess against the session's NX-27017 server."""

import datetime
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from core4.config import get_config
from core4.logger import get_logger, setup_logging
from core4.script.chist import build_parser, build_query
from tests.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTC = datetime.timezone.utc
CHIST = [sys.executable, "-m", "core4.script.chist"]
TRACEBACK = ["Traceback (most recent call last):",
             '  File "x.py", line 1, in <module>', "ValueError: boom"]


def record(minutes_ago, level, levelno, qual_name, identifier, hostname,
           username, message, **more):
    created = datetime.datetime.now(UTC) - datetime.timedelta(
        minutes=minutes_ago)
    return dict(created=created, level=level, levelno=levelno,
                qual_name=qual_name, identifier=identifier,
                hostname=hostname, username=username, message=message,
                project=qual_name.split(".")[0], **more)


@pytest.fixture
def env(core4_env):
    """core4_env with five records in sys_log."""
    core4_env.db().sys_log.insert_many([
        record(120, "INFO", 20, "proj.a.Job", "j1", "h1", "u1",
               "alpha started"),
        record(30, "DEBUG", 10, "proj.a.Job", "j1", "h1", "u1",
               "beta detail"),
        record(20, "WARNING", 30, "proj.b.Other", "j2", "h2", "u2",
               "Gamma warning"),
        record(5, "CRITICAL", 50, "other.x.Y", "j3", "h1", "u2",
               "delta failed", exception={"info": "ValueError('boom')",
                                          "text": TRACEBACK}),
        record(1, "ERROR", 40, "proj", "", "h2", "u1", "epsilon"),
    ])
    yield core4_env
    root = get_logger("x").logger.parent
    for handler in list(root.handlers):
        if getattr(handler, "_core4_handler", False):
            root.removeHandler(handler)
            handler.close()


def start(args, env=None):
    return subprocess.Popen(CHIST + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env or dict(os.environ))


def run_all(arg_lists, env=None):
    """Run chist with each argument list (at the same time); return
    ``(returncode, stdout, stderr)`` per list."""
    procs = [start(args, env) for args in arg_lists]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, out, err))
    return results


def messages(out):
    """The messages of chist's output (traceback lines skipped)."""
    return [line.split(None, 4)[4] if len(line.split(None, 4)) > 4 else ""
            for line in out.splitlines() if not line.startswith(" ")]


def local(minutes_ago, fmt):
    return (datetime.datetime.now() - datetime.timedelta(
        minutes=minutes_ago)).strftime(fmt)


def test_filters(env):
    cases = [
        ([], ["beta detail", "Gamma warning", "delta failed", "epsilon"]),
        (["--start", "3h"], ["alpha started", "beta detail", "Gamma warning",
                             "delta failed", "epsilon"]),
        (["--start", "25m"], ["Gamma warning", "delta failed", "epsilon"]),
        # a relative --end counts forward from the start
        (["--start", "3h", "--end", "170m"],
         ["alpha started", "beta detail", "Gamma warning"]),
        (["--start", "150m", "--end", "50m"], ["alpha started"]),
        (["--start", local(40, "%Y-%m-%dT%H:%M:%S")],
         ["beta detail", "Gamma warning", "delta failed", "epsilon"]),
        (["--start", local(40, "%Y-%m-%d %H:%M:%S"), "--end",
          local(10, "%Y-%m-%dT%H:%M")], ["beta detail", "Gamma warning"]),
        (["--level", "WARN"], ["Gamma warning", "delta failed", "epsilon"]),
        (["--level", "error"], ["delta failed", "epsilon"]),
        (["--level", "40"], ["delta failed", "epsilon"]),
        (["--level", "crit"], ["delta failed"]),
        (["--project", "proj"], ["beta detail", "Gamma warning", "epsilon"]),
        (["--project", "pro"], []),
        (["--qual_name", "proj.a"], ["beta detail"]),
        (["--qual_name", "proj.b.Other"], ["Gamma warning"]),
        (["--identifier", "j1", "--start", "1d"],
         ["alpha started", "beta detail"]),
        (["--identifier", "j"], []),
        (["--hostname", "h2"], ["Gamma warning", "epsilon"]),
        (["--username", "u2"], ["Gamma warning", "delta failed"]),
        (["--message", "^(gamma|EPSILON)"], ["Gamma warning", "epsilon"]),
        (["--project", "proj", "--qual_name", "proj.b", "--level", "W",
          "--start", "3h"], ["Gamma warning"]),
    ]
    today = datetime.date.today()
    if (datetime.datetime.now() - datetime.timedelta(minutes=40)).date() \
            == today:  # a time of day means today
        cases.append((["--start", local(40, "%H:%M:%S"),
                       "--end", local(10, "%H:%M")],
                      ["beta detail", "Gamma warning"]))
    results = run_all([args for args, _ in cases])
    for (args, expected), (code, out, err) in zip(cases, results):
        assert (code, err) == (0, ""), args
        assert messages(out) == expected, args


def test_output_tab_and_traceback(env):
    (code, out, err), (tcode, tout, terr) = run_all([
        ["--identifier", "j3"], ["--identifier", "j3", "--tab"]])
    assert code == tcode == 0 and err == terr == ""
    lines = out.splitlines()
    assert len(lines) == 4
    date, clock, level, name, message = lines[0].split(None, 4)
    datetime.datetime.strptime(date + " " + clock, "%Y-%m-%d %H:%M:%S.%f")
    assert (level, name, message) == ("CRITICAL", "other.x.Y/j3",
                                      "delta failed")
    assert lines[1:] == ["    " + line for line in TRACEBACK]
    tlines = tout.splitlines()
    assert tlines[0].split("\t")[1:] == ["CRITICAL", "other.x.Y", "j3",
                                         "delta failed"]
    assert tlines[1:] == ["\t" + line for line in TRACEBACK]


@pytest.mark.parametrize("args", [
    ["--start", "yesterday"], ["--end", "2024-13-45"], ["--start", "25:00"],
    ["--start", "2024-05-02", "--end", "2024-5-1 23:00"], ["--start", "5"],
    ["--level", "LOUD"],
    ["--level", ""], ["--message", "(unclosed"], ["--bogus"],
    ["--follow", "0"], ["--follow", "x"], ["--follow", "--end", "1h"],
    ["extra"],
], ids=lambda args: " ".join(args))
def test_bad_input_is_one_line(env, args):
    (code, out, err), = run_all([args])
    assert code == 2
    assert out == ""
    assert err.startswith("chist: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_unreachable_database(env, monkeypatch):
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url",
                       "mongodb://127.0.0.1:%d/" % free_port())
    monkeypatch.setenv("CORE4_OPTION_mongo__server_timeout", "!!int 300")
    (code, out, err), = run_all([["--level", "INFO"]])
    assert code == 2 and out == ""
    assert err.startswith("chist: cannot reach") and err.count("\n") == 1


def test_follow_prints_new_records(env, monkeypatch):
    env.db().sys_log.insert_one(record(1, "INFO", 20, "proj.f", "fj", "h1",
                                       "u1", "before follow"))
    proc = start(["--follow", "0.2", "--identifier", "fj"])
    lines = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
    threading.Thread(target=read, daemon=True).start()

    def next_line(timeout=60.0):
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            pytest.fail("chist --follow printed nothing: %s" % (
                proc.stderr.read(),))
    try:
        assert next_line().endswith("proj.f/fj before follow")
        # a record written through the logging handler after the start
        setup_logging(get_config(), console=False)
        log = get_logger("proj.f", identifier="fj")
        try:
            raise KeyError("k")
        except KeyError:
            log.error("after %s", "follow", exc_info=True)
        get_logger("proj.f", identifier="other").error("not this one")
        line = next_line()
        assert " ERROR " in line and line.endswith("proj.f/fj after follow")
        assert next_line() == "    Traceback (most recent call last):"
        rest = [next_line()]
        while rest[-1] != "    KeyError: 'k'":  # the traceback's last line
            rest.append(next_line())
        assert all(line.startswith("    ") for line in rest)  # traceback
        # chist polls every 0.2 s: after a few polls nothing more appeared
        # (nothing printed twice, the other identifier's record not at all)
        polls_done = time.monotonic() + 1.0
        while time.monotonic() < polls_done:
            try:
                extra = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            pytest.fail("chist --follow printed more: %r" % extra)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# chist times as upstream, at a fixed clock (issue 19, item 11) -------------

def _local(*args):
    """An aware UTC datetime of a local wall time."""
    return datetime.datetime(*args).astimezone().astimezone(UTC)


#: "now" of the range tests: 2024-05-01 12:00 local time
NOON = _local(2024, 5, 1, 12, 0)


@pytest.mark.parametrize("args, start, end", [
    (["--start", "20:00"], (2024, 4, 30, 20), None),
    (["--start", "11:00"], (2024, 5, 1, 11), None),
    (["--start", "12:00"], (2024, 5, 1, 12), None),
    (["--start", "13:00", "--end", "08:00"], (2024, 4, 30, 13),
     (2024, 5, 1, 8)),
    (["--start", "08:00", "--end", "18:00"], (2024, 4, 30, 8),
     (2024, 4, 30, 18)),
    (["--start", "6h", "--end", "05:00"], (2024, 5, 1, 6), (2024, 5, 2, 5)),
    (["--start", "6h", "--end", "2h"], (2024, 5, 1, 6), (2024, 5, 1, 8)),
    (["--start", "20:00", "--end", "2h"], (2024, 4, 30, 20),
     (2024, 4, 30, 22)),
    (["--start", "30m"], (2024, 5, 1, 11, 30), None),
    (["--start", "2d"], (2024, 4, 29, 12), None),
    (["--start", "1w"], (2024, 4, 24, 12), None),
    (["--end", "30m"], (2024, 5, 1, 11), (2024, 5, 1, 11, 30)),
    (["--end", "11:15"], (2024, 5, 1, 11), (2024, 5, 1, 11, 15)),
    (["--start", "2018-4-30 8:00"], (2018, 4, 30, 8), None),
    (["--start", "2018 5 1 11:00", "--end", "2018-05-01T12:30"],
     (2018, 5, 1, 11), (2018, 5, 1, 12, 30)),
    (["--start", "2018-4-30 8:00", "--end", "05:00"], (2018, 4, 30, 8),
     (2018, 5, 1, 5)),
    (["--start", "2018-4-30 8:00", "--end", "1d"], (2018, 4, 30, 8),
     (2018, 5, 1, 8)),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_time_ranges_as_upstream(args, start, end):
    flt = build_query(build_parser().parse_args(args), now=NOON)
    assert flt["created"]["$gte"] == _local(*start)
    assert flt["created"].get("$lte") == (_local(*end) if end else None)


def test_an_end_before_the_start_is_an_error():
    with pytest.raises(ValueError, match="--end .* is before --start"):
        build_query(build_parser().parse_args(
            ["--start", "2018-5-2", "--end", "2018-5-1 23:00"]), now=NOON)


def test_case_sensitive_and_explain(env):
    (code, out, err), (scode, sout, serr), (ecode, eout, eerr) = run_all([
        ["--message", "gamma"], ["--message", "gamma", "--case-sensitive"],
        ["--explain", "--level", "WARN"]])
    assert (code, scode, ecode) == (0, 0, 0), (err, serr, eerr)
    assert messages(out) == ["Gamma warning"]
    assert messages(sout) == []
    assert messages(eout) == ["Gamma warning", "delta failed", "epsilon"]
    lines = eerr.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "query", "index", "count"], eerr
    assert '"levelno": {"$gte": 30}' in lines[0]
    assert lines[1].split(": ", 1)[1]  # an index name, a scan or unknown
    assert lines[2] == "count: 3"


def test_help_states_the_time_rules():
    done = subprocess.run(CHIST + ["--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for rule in ("--case-sensitive", "--explain",
                 "at 12:00, 20:00 is yesterday 20:00",
                 "13:00-08:00 is yesterday 13:00 to today 08:00",
                 "--start 6h --end 2h at 12:00 is 06:00-08:00",
                 "6h-05:00 ends tomorrow 05:00", "2018 5 1 11:00"):
        assert rule in text, rule
