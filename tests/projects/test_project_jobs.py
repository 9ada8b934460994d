"""Project jobs run in their project's venv: from coco --init and croll.py;
kill and restart."""

import os
import re
import sys

import psutil
import pytest
from bson import ObjectId

from tests.projects.conftest import (
    run, coco, ok, user_error, enqueue, write_myjob, complete, output,
    reported, assert_ran_in)
from tests.support import ROOT, wait_for, wait_state

pytestmark = pytest.mark.timeout(900)


# 2. a project job, enqueued from core4's env, runs in the project's venv ----

def test_project_job_runs_in_its_venv(space, mypro, db, start_worker):
    # mypro and onlyhere cannot be imported in core4's environment
    for module in ("mypro", "onlyhere"):
        proc = run([sys.executable, "-c", "import %s" % module],
                   cwd=space.neutral)
        assert proc.returncode != 0
        assert "No module named %r" % module in proc.stderr, proc.stderr

    first = enqueue(space, "mypro.myjob.MyJob", "n=1")
    doc = db.sys_queue.find_one({"_id": first})
    assert doc["name"] == "mypro.myjob.MyJob" and doc["project"] == "mypro"
    worker = start_worker()
    complete(db, first, worker)
    text = output(db, first)
    assert "TEXT-ONE n=1" in text, text
    assert reported(text)["ONLYHERE"] == "onlyhere-42", text
    launcher = reported(text)["LAUNCHER"]
    assert_ran_in(text, os.path.join(space.home, "mypro", ".venv"))

    # change the code: the next job runs it, the worker keeps running
    write_myjob(mypro.root, "TEXT-TWO-CHANGED")
    second = enqueue(space, "mypro.myjob.MyJob", "n=2")
    complete(db, second, worker)
    text = output(db, second)
    assert "TEXT-TWO-CHANGED n=2" in text, text
    assert "TEXT-ONE" not in text, text
    # a fresh launcher: the warm one had imported the old code (preloaded)
    assert reported(text)["LAUNCHER"] != launcher, text
    assert_ran_in(text, os.path.join(space.home, "mypro", ".venv"))
    assert worker.proc.poll() is None, worker.output()[-3000:]
    assert db.sys_worker.find_one({"pid": worker.pid})["phase"] == "loop"


def test_project_job_imports_core4_of_its_venv(space, mypro, db,
                                               start_worker):
    """The job imports the core4 installed in mypro's venv, even though the
    worker runs in a folder holding a core4 package (WorkerProcess runs in
    the core4 source tree, as a developer's worker would)."""
    _id = enqueue(space, "mypro.myjob.MyJob", "n=3")
    worker = start_worker()
    assert psutil.Process(worker.pid).cwd() == ROOT
    complete(db, _id, worker)
    text = output(db, _id)
    venv = os.path.realpath(os.path.join(space.home, "mypro", ".venv"))
    core4_file = os.path.realpath(reported(text)["CORE4"])
    assert core4_file.startswith(venv + os.sep), (
        "the project job imported core4 from %s, not from its venv %s"
        % (core4_file, venv))


def test_enqueue_errors_come_from_the_project_env(space, mypro, db):
    line = user_error(coco(space, "--enqueue", "mypro.myjob.Nope"))
    assert "Nope" in line, line
    line = user_error(coco(space, "--enqueue", "mypro.myjob.MyJob",
                           "attempts=0"))
    assert "attempts" in line, line
    line = user_error(coco(space, "--enqueue", "mypro.nomodule.Job"))
    assert "mypro.nomodule" in line, line
    assert db.sys_queue.count_documents({}) == 0


# 5. kill and restart of a project job ---------------------------------------

def test_kill_and_restart_project_job(space, mypro, db, start_worker,
                                      tmp_path):
    flag = str(tmp_path / "go")
    worker = start_worker()
    first = enqueue(space, "mypro.myjob.WaitJob", 'flag="%s"' % flag)
    doc = wait_for(lambda: db.sys_queue.find_one(
        {"_id": first, "state": "running", "locked.pid": {"$exists": True}}),
        60, message="the project job to run")
    pid = doc["locked"]["pid"]
    # the job process is a fork of mypro's launcher (mypro's python)
    cmdline = psutil.Process(pid).cmdline()
    assert cmdline[0] == os.path.join(space.home, "mypro", ".venv", "bin",
                                      "python"), cmdline

    out = ok(coco(space, "--kill", str(first)))
    assert "killed [%s]" % first in out, out
    doc = wait_state(db, first, "killed", worker=worker)
    assert "kill" in doc["last_error"]["exception"], doc["last_error"]
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(
        pid).status() == psutil.STATUS_ZOMBIE, 15,
        message="the killed job process to end")

    with open(flag, "w") as handle:
        handle.write("go\n")
    out = ok(coco(space, "--restart", str(first)))
    found = re.search(r"new _id \[([0-9a-f]{24})\]", out)
    assert found, out
    child = ObjectId(found.group(1))
    complete(db, child, worker)
    text = output(db, child)
    assert "WAIT-DONE" in text, text
    assert_ran_in(text, os.path.join(space.home, "mypro", ".venv"))
    old = db.sys_journal.find_one({"_id": first})
    assert old["state"] == "killed" and old["enqueued"]["child_id"] == child


def test_croll_project_job_runs_in_its_venv(space, second, db, start_worker):
    link = os.path.join(second, ".venv")
    assert os.path.islink(link)
    assert os.path.dirname(os.path.realpath(link)) == os.path.realpath(
        os.path.join(second, ".venvs"))
    proc = run([sys.executable, "-c", "import second"], cwd=space.neutral)
    assert proc.returncode != 0
    _id = enqueue(space, "second.jobs.SecondJob")
    worker = start_worker()
    complete(db, _id, worker)
    text = output(db, _id)
    assert "SECOND-RAN" in text, text
    assert_ran_in(text, link)
    values = reported(text)
    assert os.path.realpath(values["SECOND"]).startswith(
        os.path.realpath(link) + os.sep), text
    out = ok(coco(space, "--home"))
    assert any(line.split()[:2] == ["second", "0.1.0"]
               for line in out.splitlines() if line.strip()), out
