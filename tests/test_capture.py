"""Captured output is complete (issue 19, item 5): whatever a job's child
does with ``/dev/stdout`` and ``/dev/stderr`` (``> /dev/stderr``, ``tee
/dev/stdout``, reopening them), ``sys_stdout`` keeps every line, in order,
and no NUL byte. Real ``coco --worker`` processes, in fork and spawn mode.
"""

import itertools
import os
import subprocess
import sys

import psutil
import pytest

from core4.queue.job import CoreJob
from core4.queue.queue import CoreQueue
from tests.support import WorkerProcess, wait_for, worker_env

_LOGS = itertools.count()

#: the lines ReopenJob writes, in this order
EXPECTED = ["first", "second", "to-stderr", "middle", "to-stdout",
            "tee-line", "tee-line", "after", "python-reopen", "last"]


class ReopenJob(CoreJob):
    """Print, and let children write through /dev/stderr and /dev/stdout
    between the prints (each opens the capture anew, with O_TRUNC)."""
    author = "test"

    def execute(self, **kwargs):
        print("first")
        print("second")
        os.system("echo to-stderr > /dev/stderr")
        print("middle")
        os.system("echo to-stdout > /dev/stdout")
        subprocess.run("echo tee-line | tee /dev/stdout", shell=True,
                       check=True)
        print("after")
        with open("/dev/stdout", "w") as handle:
            handle.write("python-reopen\n")
        print("last", file=sys.stderr)


class ChattyJob(CoreJob):
    """Print more than ``worker.stdout_max`` bytes, with a reopen of
    /dev/stdout near the end."""
    author = "test"

    def execute(self, lines=2000, **kwargs):
        print("HEAD-MARK")
        for number in range(lines):
            print("line %05d" % number)
        os.system("echo reopened > /dev/stdout")
        print("END-MARK")


@pytest.fixture
def worker(core4_env, tmp_path, request):
    """A worker in the start method given by the test's parameter."""
    log_dir = tmp_path / ("log%d" % next(_LOGS))
    log_dir.mkdir()
    started = WorkerProcess(
        "capture", start_method=request.param, log_dir=str(log_dir),
        env=worker_env(CORE4_OPTION_worker__stdout_max="!!int 4000"))
    client = core4_env.client()
    try:
        started.wait_registered(client[core4_env.database], 30)
    finally:
        client.close()
    yield started
    started.stop()


def _output(db, name, worker, **args):
    _id = CoreQueue().enqueue(__name__ + "." + name, **args)._id

    def finished():
        # journaled and out of the queue (the same job may come next)
        doc = db.sys_journal.find_one({"_id": _id})
        return doc if doc and doc["state"] in (
            "complete", "error", "failed") and db.sys_queue.find_one(
                {"_id": _id}) is None else None
    try:
        doc = wait_for(finished, 60, message="job %s to end" % name)
    except AssertionError:
        raise AssertionError(worker.output()[-3000:]) from None
    assert doc["state"] == "complete", doc.get("last_error")
    stored = wait_for(lambda: db.sys_stdout.find_one({"_id": _id}), 30,
                      message="output of %s" % name)
    return stored["stdout"]


@pytest.mark.parametrize("worker", ["fork", "spawn"], indirect=True)
def test_reopened_std_streams_lose_nothing(db, worker):
    out = _output(db, "ReopenJob", worker)
    assert isinstance(out, str), repr(out)[:300]
    assert "\x00" not in out, repr(out)
    assert out.splitlines() == EXPECTED, repr(out)


@pytest.mark.parametrize("worker", ["fork"], indirect=True)
def test_stdout_max_still_bounds_the_output(db, worker):
    out = _output(db, "ChattyJob", worker)
    mark, _, kept = out.partition("\n")
    assert mark.startswith("[... ") and mark.endswith(" bytes cut ...]")
    assert len(kept.encode()) == 4000
    assert "\x00" not in out
    assert kept.endswith("line 01998\nline 01999\nreopened\nEND-MARK\n")
    assert int(mark.split()[1]) == (
        len("HEAD-MARK\nreopened\n") + 2000 * len("line 00000\n")
        + len("END-MARK\n") - 4000)


@pytest.mark.parametrize("worker", ["fork"], indirect=True)
def test_output_larger_than_a_pipe_flows_while_the_job_runs(db, worker):
    # the fork launcher copies a job's pipe into its capture file: a job
    # that writes far more than a pipe holds (64 KB) must never block
    out = _output(db, "ChattyJob", worker, lines=200000)
    mark, _, kept = out.partition("\n")
    printed = sum(len("line %05d\n" % number) for number in range(200000))
    assert int(mark.split()[1]) == (
        len("HEAD-MARK\nreopened\n") + printed + len("END-MARK\n") - 4000)
    assert kept.endswith("line 199999\nreopened\nEND-MARK\n")


def _launcher(worker):
    """The worker's warm launcher process (``python -m
    core4.queue.launcher``)."""
    def find():
        for child in psutil.Process(worker.pid).children():
            if "core4.queue.launcher" in child.cmdline():
                return child
        return None
    return wait_for(find, 30, message="the worker's launcher")


@pytest.mark.parametrize("worker", ["fork"], indirect=True)
def test_the_launcher_keeps_no_descriptor_of_a_finished_job(db, worker):
    # the launcher holds each running job's output pipe and capture file:
    # a descriptor left open per job would end it after a few thousand
    _output(db, "ReopenJob", worker)
    launcher = _launcher(worker)
    before = launcher.num_fds()
    for _ in range(3):
        for _ in range(10):
            _output(db, "ReopenJob", worker)
    assert launcher.num_fds() <= before, launcher.open_files()
