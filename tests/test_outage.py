"""Database outages (issue 12): a worker, a scheduler and an app server ride
out OUTAGE seconds without their database, once *paused* (SIGSTOP: the
server's connections stay open and nothing answers, like a network
partition) and once *stopped* (the server ends, connections are refused)
and started again on the same port and data.

During the outage the API answers 503 with one JSON message within
API_BOUND seconds, ``coco`` commands fail with one line and a non-zero exit
code within CLI_BOUND seconds, and the dashboard shows its "Database
unavailable" banner. Afterwards the banner goes by itself, the jobs that
ran across the outage end ``complete`` (one of them finished *during* the
outage: its outcome is written when the database is back), the jobs
enqueued before and after run exactly once, every daemon is alive and no
daemon logged a traceback.

The database is an NX-27017 server of this module, configured as
``mongo_url``: core4 never starts a configured server itself, so the
outage lasts as long as the test wants. (Without ``mongo_url`` core4
restarts its embedded server as soon as a daemon finds it dead, and the
next ``coco`` command kills a stalled one after ``embedded.HUNG_AFTER``
seconds and starts it again: tests/test_embedded_service.py covers that.)

Leases: a running job stops itself (fenced, issue 18) once its lease was
not renewed for ``lease - margin`` seconds, because another worker may
recover it after ``lease + margin`` (tests/test_fencing.py). To ride out
an outage of OUTAGE seconds the daemons run with a heartbeat of HEARTBEAT
seconds (a lease of twice that) and a margin of MARGIN seconds: a job's
lease is renewed every HEARTBEAT / 2 seconds, so at the end of the outage
its last renewal is at most HEARTBEAT / 2 + OUTAGE seconds old, well
inside ``2 * HEARTBEAT - MARGIN``. With the default heartbeat (5 s) an
outage this long fences the running jobs by design; they run again once.
"""

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

from core4.config import reset_config
from core4.mongo import now, to_datetime
from core4.queue.queue import CoreQueue
from tests.appserver import (ADMIN_PASSWORD, API, start_app_server,
                             stop_app_server)
from tests.support import ROOT, WorkerProcess, wait_for, worker_env
from tests.test_chaos import OwnServer

#: seconds the database is away, each time
OUTAGE = 30.0
#: seconds an API request may take during the outage (the app server
#: bounds the database calls of a request by mongo.server_timeout +
#: mongo.connect_timeout, 10 s by default, and answers at once while it
#: knows the database is away; the rest is room for a loaded machine)
API_BOUND = 20.0
#: seconds a coco command may take during the outage, start-up included
#: (server selection gives up after mongo.server_timeout, 5 s)
CLI_BOUND = 15.0
HEARTBEAT = 40.0
MARGIN = 5.0
DAEMON = {
    "CORE4_OPTION_daemon__heartbeat": "!!float %s" % HEARTBEAT,
    "CORE4_OPTION_daemon__lease_margin": "!!float %s" % MARGIN,
    "CORE4_OPTION_daemon__alive_timeout": "!!float 120",
    "CORE4_OPTION_worker__max_jobs": "!!int 3",
}
SLOW = "tests.cjobs.x.SlowJob"
RECORD = "tests.cjobs.x.RecordJob"
DUMMY = "core4.queue.helper.job.DummyJob"
RUNS = "chaos_runs"
BANNER = "#outage"
_PRINT = threading.Lock()


def say(text):
    """Print a line of the test's report (from any thread)."""
    with _PRINT:
        print("  " + text, flush=True)


# the system -----------------------------------------------------------------

class System:
    """The module's database server, daemons and (if available) a browser
    at the dashboard."""

    def __init__(self, base):
        self.base = base
        self.server = OwnServer(os.path.join(base, "nx"))
        self.db = self.server.client["outage"]
        self.worker = None
        self.scheduler = None
        self.app = None
        self.page = None
        self.page_errors = []

    def env(self, **options):
        return worker_env(**dict(DAEMON, **options))

    def coco(self, *args, timeout=120):
        """Run ``coco ARGS``; return (completed process, seconds)."""
        began = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "core4.script.coco", *args],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
            env=self.env())
        return out, time.monotonic() - began

    def logs(self):
        """``{daemon: what it logged}``."""
        found = {"worker": self.worker.output(), "app": self.app.output()}
        with open(self.scheduler_log, "rb") as handle:
            found["scheduler"] = handle.read().decode("utf-8", "replace")
        return found

    def describe(self):
        return "\n".join("----- %s -----\n%s" % (name, text[-5000:])
                         for name, text in self.logs().items())


def start_browser(system, stack):
    """Headless Chromium logged in at the dashboard's queue, or None if
    there is no Chromium (then only the API and the CLI are checked)."""
    try:
        from playwright.sync_api import sync_playwright
        from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS
    except ImportError:
        return None
    if not os.path.exists(CHROMIUM):
        return None
    playwright = sync_playwright().start()
    stack.append(playwright.stop)
    browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                         args=CHROMIUM_ARGS)
    stack.append(browser.close)
    context = browser.new_context(base_url=system.app.url)
    context.set_default_timeout(30000)
    answer = context.request.post(system.app.url + API + "/login", data={
        "username": "admin", "password": ADMIN_PASSWORD})
    assert answer.ok, answer.text()
    page = context.new_page()
    page.on("pageerror", lambda exc: system.page_errors.append(str(exc)))
    page.goto("/#/queue")
    page.wait_for_selector("#live-state.on")
    return page


@pytest.fixture(scope="module")
def system():
    """An NX-27017 server of its own (``mongo_url``), a worker, a
    scheduler and an app server on it, and a browser at the dashboard."""
    base = os.path.realpath(tempfile.mkdtemp(prefix="core4-outage-"))
    home = os.path.join(base, "home")
    os.makedirs(home)
    local = os.path.join(base, "local.yaml")
    with open(local, "w") as handle:
        handle.write("{}\n")
    found = System(base)
    stack = []
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in {
                    "CORE4_OPTION_DEFAULT__mongo_url": found.server.url,
                    "CORE4_OPTION_DEFAULT__mongo_database": "outage",
                    "CORE4_OPTION_folder__home": home,
                    "CORE4_CONFIG": local,
                    "CORE4_OPTION_api__admin_password": ADMIN_PASSWORD,
            }.items():
                patch.setenv(key, value)
            for key, value in DAEMON.items():
                patch.setenv(key, value)
            reset_config()
            found.db[RUNS].create_index([("job", 1), ("kind", 1)])
            found.worker = WorkerProcess("outage", env=found.env(),
                                         log_dir=base)
            stack.append(found.worker.stop)
            found.scheduler_log = os.path.join(base, "scheduler.log")
            with open(found.scheduler_log, "wb") as log:
                found.scheduler = subprocess.Popen(
                    [sys.executable, "-m", "core4.script.coco",
                     "--scheduler", "outsched"], env=found.env(), stdout=log,
                    stderr=subprocess.STDOUT, cwd=ROOT,
                    start_new_session=True)
            stack.append(lambda: stop(found.scheduler))
            found.app = start_app_server(
                {"base": base, "url": found.server.url,
                 "database": "outage"}, name="outapp", **DAEMON)
            stack.append(lambda: stop_app_server(found.app))
            found.worker.wait_registered(found.db, 60)
            for kind in ("scheduler", "app"):
                wait_for(lambda: found.db.sys_worker.find_one(
                    {"kind": kind, "phase": "loop"}), 60,
                    message="the %s to run" % kind)
            found.page = start_browser(found, stack)
            yield found
    finally:
        while stack:
            try:
                stack.pop()()
            except Exception as exc:  # noqa: BLE001 - clean up the rest
                print("cleanup: %s" % exc)
        found.server.stop()
        reset_config()
        shutil.rmtree(base, ignore_errors=True)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# during the outage ----------------------------------------------------------

def api_checks(system, token, job_id):
    """Requests to the API during the outage, in two rounds: each answers
    503 with one JSON message within API_BOUND seconds; in the second
    round the app server knows the database is away and answers at once,
    but for the one request that tries it. Returns the problems."""
    requests = [
        ("GET", API + "/job", {"token": token}),
        ("GET", API + "/job/%s" % job_id, {"token": token}),
        ("GET", API + "/queue", {"token": token}),
        ("POST", API + "/login", {"json": {"username": "admin",
                                           "password": ADMIN_PASSWORD}}),
    ]

    def send(method, path, kwargs):
        began = time.monotonic()
        try:
            answer = system.app.request(method, path, timeout=60, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a problem to report
            took = time.monotonic() - began
            return took, "%s %s: %s after %.1f s" % (method, path, exc, took)
        took = time.monotonic() - began
        try:
            body = answer.json()
        except ValueError:
            body = None
        say("%s %s -> %s in %.1f s: %s" % (
            method, path, answer.status_code, took,
            body and body.get("message")))
        if answer.status_code != 503 or not isinstance(body, dict) or \
                not body.get("message") or "\n" in body["message"] or \
                body.get("code") != 503 or took > API_BOUND or \
                not answer.headers.get("Retry-After"):
            return took, "%s %s: %s in %.1f s: %s" % (
                method, path, answer.status_code, took, answer.text[:300])
        return took, None

    problems = []
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        for _ in range(2):
            answers = list(pool.map(lambda r: send(*r), requests))
            problems += [problem for _, problem in answers if problem]
        fastest = min(took for took, _ in answers)
        if fastest > API_BOUND / 4:
            problems.append("no request of the second round answered at "
                            "once (the fastest took %.1f s)" % fastest)
    return problems


def cli_checks(system, job_id):
    """coco commands during the outage: one line on stderr, nothing on
    stdout, a non-zero exit code within CLI_BOUND seconds. Returns the
    problems."""
    commands = [["--listing"], ["--enqueue", DUMMY, "sleep=1"],
                ["--detail", job_id], ["--alive"]]
    problems = []
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        for args, (out, took) in zip(commands, pool.map(
                lambda a: system.coco(*a, timeout=60), commands)):
            say("coco %s -> %d in %.1f s: %s" % (
                " ".join(args), out.returncode, took, out.stderr.strip()))
            if out.returncode == 0 or out.stdout.strip() or \
                    len(out.stderr.strip().splitlines()) != 1 or \
                    took > CLI_BOUND:
                problems.append("coco %s: exit %d in %.1f s, stdout %r, "
                                "stderr %r" % (" ".join(args), out.returncode,
                                               took, out.stdout[-500:],
                                               out.stderr[-1500:]))
    return problems


def banner_shown(system, reload):
    """The dashboard shows its banner within the outage; with ``reload``
    the page is loaded again then, and shows the banner again (it cannot
    even learn who is logged in). Returns the problems."""
    if system.page is None:
        return []
    page = system.page
    began = time.monotonic()
    try:
        page.wait_for_selector(BANNER, state="visible",
                               timeout=(API_BOUND + 5) * 1000)
        text = page.inner_text(BANNER)
        say("dashboard banner after %.1f s: %r" % (
            time.monotonic() - began, text))
        if "database unavailable" not in text.lower():
            return ["the banner says %r" % text]
        if reload:
            page.reload()
            page.wait_for_selector(BANNER, state="visible",
                                   timeout=(API_BOUND + 5) * 1000)
            heading = page.inner_text("main h1")
            say("reloaded: banner and %r after %.1f s" % (
                heading, time.monotonic() - began))
            if heading != "Waiting for the database":
                return ["the reloaded page shows %r" % heading]
    except Exception as exc:  # noqa: BLE001 - a problem to report
        return ["dashboard: %s" % str(exc).splitlines()[0]]
    return []


def ride_out(system, begin, end, reload=False):
    """The scenario: jobs before, an outage (``begin()`` .. ``end()``)
    with the checks during it, jobs after, and the checks after it
    (``reload``: see :func:`banner_shown`)."""
    db = system.db
    queue = CoreQueue()
    token = system.app.admin
    # two long jobs: one runs across the outage, the other ends in it; and
    # short jobs on the last free slot (max_jobs 3), some wait when the
    # outage begins
    across = queue.enqueue(SLOW, sleep=OUTAGE + 8)._id
    within = queue.enqueue(DUMMY, sleep=OUTAGE / 2, loop_time=1)._id
    before = [queue.enqueue(RECORD, n=n, sleep=1)._id for n in range(6)]
    try:
        wait_for(lambda: db[RUNS].find_one({"job": str(across)}) and
                 db.sys_queue.find_one({"_id": within, "state": "running"})
                 and db[RUNS].find_one({"job": str(before[0])}), 60,
                 message="the jobs to run")
    except AssertionError as exc:
        raise AssertionError("%s\n%s" % (exc, system.describe())) from None
    began = time.monotonic()
    begin()
    problems = []
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            api = pool.submit(api_checks, system, token, str(across))
            cli = pool.submit(cli_checks, system, str(across))
            problems += banner_shown(system, reload)
            problems += api.result() + cli.result()
        left = OUTAGE - (time.monotonic() - began)
        if left > 0:
            time.sleep(left)
        else:  # a busy machine: the outage lasts as long as the checks
            say("the checks took %.1f s longer than OUTAGE" % -left)
    finally:
        end()
    back = time.monotonic()
    back_at = now()
    say("database back after %.1f s" % (back - began))
    assert not problems, "during the outage:\n%s\n%s" % (
        "\n".join(problems), system.describe())

    if system.page is not None:
        system.page.wait_for_selector(BANNER, state="hidden", timeout=60000)
        system.page.wait_for_selector("#live-state.on", timeout=60000)
        say("dashboard live again after %.1f s" % (
            time.monotonic() - back))
    after = [queue.enqueue(RECORD, n=n, sleep=0.2)._id for n in range(10, 14)]
    ids = [across, within] + before + after

    def done():
        docs = list(db.sys_journal.find({"_id": {"$in": ids}}))
        return docs if len(docs) == len(ids) else None
    try:
        docs = wait_for(done, 90, 0.5, "all jobs to end")
    except AssertionError:
        raise AssertionError(system.describe()) from None
    say("all jobs ended %.1f s after the outage" % (
        time.monotonic() - back))
    wrong = [(d["_id"], d["name"], d["state"], d["trial"],
              (d.get("last_error") or {}).get("exception"))
             for d in docs if (d["state"], d["trial"]) != ("complete", 1)]
    assert not wrong, "%s\n%s" % (wrong, system.describe())
    # the job that ended in the outage: recorded once the database was
    # back, with its own end time and runtime, not the outage's
    within_doc = [d for d in docs if d["_id"] == within][0]
    assert to_datetime(within_doc["finished_at"]) < back_at, (
        within_doc["finished_at"], back_at)
    # its progress reports (one a second) did not wait for the database
    assert within_doc["runtime"] < OUTAGE / 2 + 5, within_doc["runtime"]
    for _id in ids:
        if _id != within:  # each execution of the others is recorded
            runs = db[RUNS].count_documents({"job": str(_id), "kind": {
                "$in": ["start", "run"]}})
            assert runs == 1, "job %s ran %d times" % (_id, runs)
    assert db.sys_queue.count_documents({"_id": {"$in": ids}}) == 0

    # every daemon goes on
    for name, proc in (("worker", system.worker.proc),
                       ("scheduler", system.scheduler),
                       ("app server", system.app.process)):
        assert proc.poll() is None, "the %s exited\n%s" % (
            name, system.describe())
    restarted = now()
    wait_for(lambda: db.sys_worker.count_documents(
        {"kind": {"$in": ["scheduler", "app"]},
         "heartbeat": {"$gt": restarted}}) == 2, 30,
        message="the heartbeats of scheduler and app server")
    out, _ = system.coco("--alive")
    assert out.returncode == 0, out.stderr
    for kind in ("worker", "scheduler", "app"):
        assert " %s " % kind in out.stdout, out.stdout
    answer = system.app.request("GET", API + "/job/%s" % across,
                                token=token)
    assert answer.status_code == 200, answer.text
    for name, text in system.logs().items():
        assert "Traceback" not in text, "%s logged a traceback:\n%s" % (
            name, text[-6000:])
    assert not system.page_errors, system.page_errors


# the tests ------------------------------------------------------------------

def test_paused_database(system):
    """SIGSTOP for OUTAGE seconds: every connection hangs."""
    ride_out(system, system.server.pause, system.server.resume)


def test_stopped_database(system):
    """The server ends (SIGTERM), stays down OUTAGE seconds and starts
    again on its port with its data; the dashboard is loaded again
    meanwhile."""
    server = system.server

    def down():
        pid = server.pid()
        os.kill(pid, signal.SIGTERM)
        if server.proc is not None:
            server.proc.wait(20)
        else:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                wait_for(lambda: not psutil.pid_exists(pid), 20,
                         message="the server to end")
    ride_out(system, down, server.restart, reload=True)


def test_app_server_answers_at_once_while_the_database_is_away():
    """The app server's view of its database (core4.api.handler): after a
    503-class failure one call at a time tries the database (a ping), the
    others are refused at once; only the ping's answer ends the outage."""
    import pymongo.errors
    from core4.api.errors import status_of
    from core4.api.handler import DatabaseState
    state = DatabaseState()
    assert state.admit() == "go" and state.admit() == "go"
    state.done("go", pymongo.errors.ServerSelectionTimeoutError("x"))
    probe = state.admit()
    assert probe == "probe"
    assert state.admit() is None  # while the probe runs
    assert status_of(state.unavailable()) == (503, "database unreachable")
    state.done(probe, pymongo.errors.NetworkTimeout("timed out"))
    assert state.admit() == "probe"
    state.done("probe", pymongo.errors.ExecutionTimeout("slow", 50))
    assert state.admit() == "probe"
    state.done("probe")  # the ping was answered
    assert state.admit() == "go" and state.down_since is None
    state.done("go", ValueError("not the database"))
    assert state.admit() == "go"
    # once down, a call that succeeds without the database (a password
    # hash, a cached answer) does not end the outage: only a probe does
    state.done("go", pymongo.errors.AutoReconnect("connection refused"))
    state.done("go")
    state.done("go", ValueError("not the database"))
    assert state.admit() == "probe"
