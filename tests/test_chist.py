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
        (["--start", "1d", "--end", "10m"],
         ["alpha started", "beta detail", "Gamma warning"]),
        (["--start", "1w", "--end", "100m"], ["alpha started"]),
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
    ["--start", "5m", "--end", "1h"], ["--level", "LOUD"],
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
