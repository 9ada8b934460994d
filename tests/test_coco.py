"""Tests of the ``coco`` command line, run as a real subprocess against the
session's NX-27017 server (fixture ``core4_env``) or an embedded server."""

import datetime
import getpass
import json
import os
import re
import subprocess
import sys
import time

import psutil
import pymongo
import pytest
from bson import ObjectId

import core4
from core4.mongo.embedded import stop_server

DUMMY = "core4.queue.helper.job.DummyJob"
#: the qualified name core4 stores (the module the class is defined in)
DUMMY_QUAL = "core4.queue.helper.job.example.DummyJob"
OID = re.compile(r"\b[0-9a-f]{24}\b")


def run(*args, env=None, timeout=30):
    """Run ``coco ARGS`` in a subprocess; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "core4.script.coco", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
        stdin=subprocess.DEVNULL)


def ok(*args, env=None):
    """Run coco, assert success; return its stdout."""
    proc = run(*args, env=env)
    assert proc.returncode == 0, (args, proc.stdout, tail(proc.stderr))
    assert "Traceback" not in proc.stdout + proc.stderr, tail(proc.stderr)
    return proc.stdout


def tail(text, lines=3):
    """The last lines of an output, for short failure messages."""
    return "\n".join(text.splitlines()[-lines:])


def user_error(*args, env=None, timeout=30):
    """Run coco, assert a user error; return the line on stderr."""
    return check_user_error(run(*args, env=env, timeout=timeout))


def check_user_error(proc):
    """Assert a user error: exit 2, exactly one line on stderr, no
    traceback anywhere; return that line."""
    args = proc.args
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, "traceback: " + tail(output)
    assert proc.returncode == 2, (args, proc.returncode, tail(output))
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), (args, proc.stderr)
    return lines[0]


def enqueue(*args):
    """Enqueue a DummyJob through coco; return its ObjectId."""
    out = ok("--enqueue", DUMMY, *args).strip()
    assert OID.fullmatch(out), out
    return ObjectId(out)


def api_enqueue(**args):
    """Enqueue a DummyJob in-process (test setup, not under test)."""
    from core4.queue.queue import CoreQueue
    return CoreQueue().enqueue(DUMMY, **args)._id


def api_kill(_id):
    from core4.queue.queue import CoreQueue
    assert CoreQueue().kill(_id) is True


def ids_in(text):
    return {ObjectId(m) for m in OID.findall(text)}


# enqueue -------------------------------------------------------------------

def test_enqueue_prints_new_id_stored_with_args(core4_env):
    _id = enqueue("sleep=1")
    doc = core4_env.db().sys_queue.find_one({"_id": _id})
    assert doc is not None
    assert doc["args"] == {"sleep": 1}
    assert doc["state"] == "pending"
    assert doc["name"] == DUMMY_QUAL
    assert core4_env.db().sys_queue.count_documents({}) == 1


def test_enqueue_values_are_json_literals_and_properties(core4_env):
    _id = enqueue("x=[1,2]", 's="text"', "b=true", "priority=5")
    doc = core4_env.db().sys_queue.find_one({"_id": _id})
    assert doc["args"] == {"x": [1, 2], "s": "text", "b": True}
    assert doc["priority"] == 5


def test_enqueue_single_json_object(core4_env):
    _id = enqueue('{"sleep": 2, "n": null, "d": {"k": [1]}, "priority": 3}')
    doc = core4_env.db().sys_queue.find_one({"_id": _id})
    assert doc["args"] == {"sleep": 2, "n": None, "d": {"k": [1]}}
    assert doc["priority"] == 3


@pytest.mark.parametrize("key", ["by", "parent_id", "name", "job"])
def test_enqueue_argument_names_of_enqueue_stay_args(core4_env, key):
    """An argument named like a parameter of CoreQueue.enqueue/make_job is
    either a job argument or rejected clearly; it never changes who
    enqueued the job, links it to a parent, or crashes."""
    proc = run("--enqueue", DUMMY, '%s="mallory"' % key)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, "traceback: " + tail(output)
    assert proc.returncode in (0, 2), tail(output)
    if proc.returncode == 2:
        assert len(proc.stderr.splitlines()) == 1 and key in proc.stderr
        assert core4_env.db().sys_queue.count_documents({}) == 0
        return
    doc = core4_env.db().sys_queue.find_one({"_id": ObjectId(
        proc.stdout.strip())})
    assert doc["args"] == {key: "mallory"}
    assert doc["enqueued"]["username"] == getpass.getuser()
    assert doc["enqueued"]["parent_id"] is None  # a user enqueued it


def test_duplicate_enqueue_is_refused(core4_env):
    enqueue("sleep=1")
    line = user_error("--enqueue", DUMMY, "sleep=1")
    assert "already in the queue" in line
    assert core4_env.db().sys_queue.count_documents({}) == 1


# inspect -------------------------------------------------------------------

def test_detail_by_id_shows_job_and_stdout(core4_env):
    _id = api_enqueue(sleep=1)
    core4_env.db().sys_stdout.insert_one({"_id": _id,
                                          "stdout": "hello\nworld\n"})
    out = ok("--detail", str(_id))
    assert str(_id) in out
    assert DUMMY_QUAL in out
    assert "'state': 'pending'" in out
    assert "'args': {'sleep': 1}" in out
    head, sep, tail = out.partition("STDOUT:\n")
    assert sep, out
    stdout, sep, log = tail.partition("LOG:\n")
    assert sep, out
    assert stdout.splitlines() == ["hello", "world"]
    assert log.strip() == ""  # a pending job has no log records yet


def test_detail_shows_times_and_lost_workers(core4_env):
    _id = api_enqueue(sleep=1)
    core4_env.db().sys_queue.update_one({"_id": _id}, {"$set": {
        "lost": 1, "lost_by": ["w1@host1"]}})
    out = ok("--detail", str(_id))
    assert "'lost': 1" in out and "'lost_by': ['w1@host1']" in out
    # stored times are shown as UTC datetimes
    assert re.search(r"'query_at': datetime\.datetime\(\d{4}, .*tzinfo="
                     r"datetime\.timezone\.utc\)", out), out


def test_detail_shows_the_job_log(core4_env):
    from core4.queue.queue import CoreQueue
    queue = CoreQueue()
    job = queue.enqueue(DUMMY_QUAL, sleep=3)
    core4_env.db().sys_log.insert_one({
        "created": datetime.datetime.now(datetime.timezone.utc),
        "message": "hello from the job", "level": "INFO", "levelno": 20,
        "qual_name": DUMMY_QUAL, "identifier": str(job._id),
        "hostname": "h", "username": "u", "project": "core4"})
    out = ok("--detail", str(job._id))
    log = out.partition("LOG:\n")[2]
    assert "hello from the job" in log and "INFO" in log


def test_detail_by_qual_name_shows_every_job_of_that_name(core4_env):
    one, two = api_enqueue(sleep=1), api_enqueue(sleep=2)
    other = ObjectId()
    core4_env.db().sys_queue.insert_one(
        {"_id": other, "name": "other.mod.Job", "state": "pending"})
    core4_env.db().sys_stdout.insert_one({"_id": two, "stdout": b"bytes out"})
    out = ok("--detail", DUMMY_QUAL)
    assert ids_in(out) == {one, two}
    assert out.count("STDOUT:") == 2
    assert "bytes out" in out
    assert "other.mod.Job" not in out


def test_listing_shows_jobs_and_filters_by_state(core4_env):
    assert ok("--listing").strip() == "no jobs."
    pending, killed = api_enqueue(sleep=1), api_enqueue(sleep=2)
    api_kill(killed)
    out = ok("--listing")
    assert "_id" in out.splitlines()[0] and "state" in out.splitlines()[0]
    assert ids_in(out) == {pending, killed}
    assert ids_in(ok("--listing", "pending")) == {pending}
    assert ids_in(ok("--listing", "killed")) == {killed}
    assert ids_in(ok("--listing", "pending", "killed")) == {pending, killed}
    assert ok("--listing", "running").strip() == "no jobs."


def test_info_counts_by_name_and_state(core4_env):
    api_enqueue(sleep=1)
    api_enqueue(sleep=2)
    api_kill(api_enqueue(sleep=3))
    rows = [line.split() for line in ok("--info").splitlines()[2:]]
    assert sorted(rows) == sorted([["2", "pending", "....", DUMMY_QUAL],
                                   ["1", "killed", "...K", DUMMY_QUAL]])


# kill, restart, remove -------------------------------------------------------

def test_kill_and_restart_by_id(core4_env):
    db = core4_env.db()
    _id = api_enqueue(sleep=1)
    out = ok("--kill", str(_id))
    assert str(_id) in out
    assert db.sys_queue.find_one({"_id": _id})["state"] == "killed"

    out = ok("--restart", str(_id))
    new = [i for i in ids_in(out) if i != _id]
    assert len(new) == 1, out
    assert db.sys_queue.find_one({"_id": _id}) is None
    assert db.sys_journal.find_one({"_id": _id})["state"] == "killed"
    doc = db.sys_queue.find_one({"_id": new[0]})
    assert doc["state"] == "pending"
    assert doc["enqueued"]["parent_id"] == _id
    assert doc["args"] == {"sleep": 1}


def test_kill_and_restart_by_qual_name_act_on_all_its_jobs(core4_env):
    db = core4_env.db()
    ids = {api_enqueue(sleep=1), api_enqueue(sleep=2)}
    out = ok("--kill", DUMMY_QUAL)
    assert ids_in(out) == ids
    assert {d["state"] for d in db.sys_queue.find()} == {"killed"}

    ok("--restart", DUMMY_QUAL)
    docs = list(db.sys_queue.find())
    assert len(docs) == 2
    assert {d["state"] for d in docs} == {"pending"}
    assert {d["enqueued"]["parent_id"] for d in docs} == ids
    assert {d["_id"] for d in db.sys_journal.find()} == ids


def test_kill_of_a_killed_job_is_a_user_error(core4_env):
    _id = api_enqueue()
    api_kill(_id)
    line = user_error("--kill", str(_id))
    assert "kill" in line
    assert core4_env.db().sys_queue.find_one({"_id": _id})["state"] == \
        "killed"


def test_kill_of_an_unknown_id_says_it_does_not_exist(core4_env):
    missing = str(ObjectId())
    line = user_error("--kill", missing)
    assert missing in line or "not found" in line or "no job" in line, line


@pytest.mark.parametrize("flag", ["--remove", "--remove-hard"])
def test_remove_by_id_and_by_qual_name(core4_env, flag):
    db = core4_env.db()
    first, second, third = (api_enqueue(sleep=i) for i in (1, 2, 3))
    ok(flag, str(first))
    assert db.sys_queue.find_one({"_id": first}) is None
    journaled = db.sys_journal.find_one({"_id": first})
    assert journaled is not None and journaled.get("removed_at")
    assert db.sys_queue.count_documents({}) == 2
    # a removed job is still shown, from the journal
    assert "'journaled': True" in ok("--detail", str(first))

    out = ok(flag, DUMMY_QUAL)
    assert ids_in(out) == {second, third}
    assert db.sys_queue.count_documents({}) == 0
    assert {d["_id"] for d in db.sys_journal.find()} == {first, second,
                                                          third}


# maintenance and daemons -----------------------------------------------------

def test_pause_resume_and_mode(core4_env):
    worker = core4_env.db().sys_worker

    def maintenance():
        return worker.find_one({"_id": "__maintenance__"}) or {}

    assert ok("--mode").splitlines() == ["global maintenance: off",
                                         "projects in maintenance: none"]
    out = ok("--pause")
    assert bool(maintenance()["global"]) is True
    assert "global maintenance: on" in out
    out = ok("--pause", "myproject")
    assert maintenance()["projects"] == ["myproject"]
    assert "projects in maintenance: myproject" in out
    out = ok("--resume")
    assert bool(maintenance()["global"]) is False
    assert out.splitlines() == ["global maintenance: off",
                                "projects in maintenance: myproject"]
    ok("--resume", "myproject")
    assert maintenance()["projects"] == []
    assert ok("--mode").splitlines() == ["global maintenance: off",
                                         "projects in maintenance: none"]


def test_halt_writes_halt_document(core4_env):
    before = datetime.datetime.now(datetime.timezone.utc)
    assert ok("--halt").strip() == "system halt"
    doc = core4_env.db().sys_worker.find_one({"_id": "__halt__"})
    assert doc is not None
    assert isinstance(doc["at"], datetime.datetime)
    second = datetime.timedelta(seconds=1)
    assert before - second <= doc["at"] <= datetime.datetime.now(
        datetime.timezone.utc) + second


def test_alive_without_daemons(core4_env):
    assert ok("--alive").strip() == "no daemon."


def test_alive_lists_a_daemon_with_its_local_heartbeat(core4_env):
    from core4.mongo import now
    at = now()
    core4_env.db().sys_worker.insert_one({
        "_id": "w1@host1", "kind": "worker", "pid": 4321, "phase": "loop",
        "hostname": "host1", "heartbeat": at, "started_at": at})
    lines = ok("--alive").splitlines()
    assert lines[0].split() == ["_id", "kind", "pid", "phase", "heartbeat"]
    row = lines[2].split()
    assert row[:4] == ["w1@host1", "worker", "4321", "loop"]
    assert " ".join(row[4:]) == at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def test_version(core4_env):
    assert ok("--version").strip() == "core4 %s" % core4.__version__


def test_who_names_the_database(core4_env):
    out = ok("--who")
    from core4.script.dbcmd import masked
    assert masked(core4_env.url) in out
    assert core4_env.database in out
    assert "sys.queue: %s.sys_queue" % core4_env.database in out


# migrate -------------------------------------------------------------------

def test_migrate_converts_float_times_of_core4_before_0_3(core4_env):
    """A database written by core4 < 0.3 (times as epoch seconds, no schema
    marker) is converted in place; a second run has nothing to do."""
    from core4.queue.queue import CoreQueue
    CoreQueue().setup()  # the collections and the schema marker of today
    db = core4_env.db()
    utc = datetime.timezone.utc
    legacy = {"_id": ObjectId(), "name": DUMMY_QUAL, "state": "pending",
              "args": {}, "query_at": 1795453745.25,
              "enqueued": {"at": 1795453700.5, "username": "old"},
              "attempts_left": 1, "priority": 0}
    db.sys_queue.insert_one(legacy)
    done = {"_id": ObjectId(), "name": DUMMY_QUAL, "state": "complete",
            "started_at": 1795453746.0, "finished_at": 1795453747.125,
            "enqueued": {"at": 1795453700.5}, "runtime": 1.125}
    db.sys_journal.insert_one(done)
    db.sys_worker.delete_one({"_id": "__schema__"})
    out = ok("--migrate")
    assert out.splitlines() == ["sys_queue: 1 document(s) converted",
                                "sys_journal: 1 document(s) converted"], out
    doc = db.sys_queue.find_one({"_id": legacy["_id"]})
    assert doc["query_at"] == datetime.datetime(2026, 11, 23, 17, 9, 5,
                                                250000, tzinfo=utc)
    assert doc["enqueued"] == {
        "at": datetime.datetime.fromtimestamp(1795453700.5, utc),
        "username": "old"}
    journaled = db.sys_journal.find_one({"_id": done["_id"]})
    assert journaled["finished_at"] == datetime.datetime.fromtimestamp(
        1795453747.125, utc)
    assert journaled["runtime"] == 1.125  # durations stay seconds
    assert db.sys_worker.find_one({"_id": "__schema__"})["version"] == 2
    # the converted job is shown like any other
    listing = ok("--listing")
    assert str(legacy["_id"]) in listing
    assert "2026-11-2" in listing  # its local enqueue date
    assert ok("--migrate").strip() == "nothing to migrate (schema 2)"


# user mistakes -------------------------------------------------------------

MISTAKES = [
    (["--bogus"], "--bogus"),
    ([], "nothing to do"),
    (["--detail", "123"], "123"),
    (["--detail", "5f0000000000000000000000"], "5f0000000000000000000000"),
    (["--enqueue", "nope.Nope"], "nope"),
    (["--enqueue", "os.path"], "os.path"),
    (["--enqueue", DUMMY, "{bad"], "JSON"),
    (["--enqueue", DUMMY, "x=abc"], "abc"),
    (["--enqueue", DUMMY, "x"], "k=v"),
    (["--enqueue", DUMMY, 'priority="high"'], "priority"),
    (["--enqueue", DUMMY, "args=5"], "args"),
    (["--enqueue", DUMMY, "x=NaN"], "NaN"),
    (["--enqueue", DUMMY, "x=99999999999999999999999"], None),
    (["--listing", "nonsense"], "nonsense"),
    (["--migrate", "now"], "now"),
    (["--migrate", "--listing"], "--listing"),
    (["--kill", "nope.Nope"], "nope.Nope"),
    (["--db", "restart"], "restart"),
    (["--db"], "not embedded"),
    (["--db", "stop"], "not embedded"),
    (["--db", "start", "--yes"], "--yes"),
    (["--db", "--who"], "--who"),
]


@pytest.fixture(scope="module")
def mistake_results(servers, tmp_path_factory):
    """Run every MISTAKES command at once (on a database of their own);
    return ``[CompletedProcess]`` in the order of MISTAKES."""
    base = tmp_path_factory.mktemp("mistakes")
    (base / "home").mkdir()
    (base / "local.yaml").write_text("{}\n")
    url, database = servers.url("nx"), "coco_mistakes_%d" % os.getpid()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CORE4_OPTION_")}
    env.update(CORE4_OPTION_DEFAULT__mongo_url=url,
               CORE4_OPTION_DEFAULT__mongo_database=database,
               CORE4_OPTION_folder__home=str(base / "home"),
               CORE4_CONFIG=str(base / "local.yaml"))
    procs = [subprocess.Popen(
        [sys.executable, "-m", "core4.script.coco", *args], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for args, _ in MISTAKES]
    results = []
    for proc, (args, _) in zip(procs, MISTAKES):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(args, proc.returncode,
                                                   out, err))
    client = pymongo.MongoClient(url)
    assert client[database].sys_queue.count_documents({}) == 0
    client.drop_database(database)
    client.close()
    return results


@pytest.mark.parametrize("index", range(len(MISTAKES)),
                         ids=[" ".join(a) or "no-flag" for a, _ in MISTAKES])
def test_user_mistakes_give_one_line_and_exit_2(mistake_results, index):
    line = check_user_error(mistake_results[index])
    fragment = MISTAKES[index][1]
    if fragment is not None:
        assert fragment in line, line


def test_unreachable_database(core4_env):
    env = dict(os.environ,
               CORE4_OPTION_DEFAULT__mongo_url="mongodb://127.0.0.1:1/",
               CORE4_OPTION_mongo__server_timeout="!!int 300")
    start = time.monotonic()
    line = user_error("--enqueue", DUMMY, env=env, timeout=20)
    assert time.monotonic() - start < 5
    assert "cannot reach MongoDB" in line, line


# embedded default ------------------------------------------------------------

def test_embedded_server_is_started_and_reused(tmp_path, request):
    home = tmp_path / "home"
    home.mkdir()
    local = tmp_path / "local.yaml"
    local.write_text("{}\n")
    data_dir = str(home / "mongo")
    request.addfinalizer(lambda: stop_server(data_dir))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CORE4_OPTION_")}
    env.update(CORE4_OPTION_folder__home=str(home), CORE4_CONFIG=str(local))

    out = ok("--enqueue", DUMMY, env=env).strip()
    assert OID.fullmatch(out), out
    with open(os.path.join(data_dir, "server.json")) as handle:
        state = json.load(handle)
    proc = psutil.Process(state["pid"])
    assert any("nx_27017" in part for part in proc.cmdline())
    assert os.path.realpath(data_dir) in proc.cmdline()

    assert ids_in(ok("--listing", env=env)) == {ObjectId(out)}
    with open(os.path.join(data_dir, "server.json")) as handle:
        assert json.load(handle)["pid"] == state["pid"]

    who = ok("--who", env=env)
    assert "embedded" in who
    assert str(state["pid"]) in who and state["url"] in who


def test_detail_of_a_journaled_job_by_its_re_exported_name(core4_env):
    _id = api_enqueue(sleep=1)
    db = core4_env.db()
    doc = db.sys_queue.find_one({"_id": _id})
    db.sys_journal.insert_one(dict(doc, state="complete"))
    db.sys_queue.delete_one({"_id": _id})
    # DummyJob is stored as ...example.DummyJob, users know the re-export
    out = ok("--detail", "core4.queue.helper.job.DummyJob")
    assert ids_in(out) == {_id}
    assert "'state': 'complete'" in out
