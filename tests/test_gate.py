"""A job with a ``max_parallel`` starts *gated*: its process prepares while
its worker admits it, and runs only when told to. A dropped job's process
exits without running or recording anything. Real launcher processes
(fork) and fresh interpreters (spawn)."""

import os

import pytest

from core4.queue.job import CoreJob
from core4.queue.launcher.launcher import (Exited, ForkLauncher,
                                           SpawnLauncher, Started)
from core4.queue.launcher.process import EXIT_DONE, EXIT_DROPPED
from core4.queue.queue import CoreQueue
from tests.support import wait_for, worker_env


class MarkJob(CoreJob):
    """Create the file ``marker`` when it runs."""
    author = "test"

    def execute(self, marker, **kwargs):
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))


def claimed(db, marker):
    """The document of a just enqueued MarkJob, as a claim leaves it."""
    _id = CoreQueue().enqueue(__name__ + ".MarkJob", marker=marker)._id
    doc = db.sys_queue.find_one({"_id": _id})
    doc.update(state="running", locked={"token": "t-%s" % _id})
    return doc


def start(launcher, doc, tmp_path):
    base = str(tmp_path / str(doc["_id"]))
    launcher.start(doc, base + ".out", base + ".result", None, gated=True)
    return base + ".result"


@pytest.fixture(params=["fork", "spawn"])
def launcher(request, core4_env):
    made = (ForkLauncher if request.param == "fork" else SpawnLauncher)(
        env=worker_env())
    yield made
    made.close()


def test_gated_job_runs_only_when_let_and_a_dropped_one_never(
        launcher, db, tmp_path):
    held_marker, let_marker = (str(tmp_path / name)
                               for name in ("held", "let"))
    held, let = claimed(db, held_marker), claimed(db, let_marker)
    held_result = start(launcher, held, tmp_path)
    let_result = start(launcher, let, tmp_path)
    seen = []

    def events_of(_id, kind):
        seen.extend(launcher.poll())
        return [e for e in seen if e.job_id == _id and isinstance(e, kind)]

    wait_for(lambda: events_of(held["_id"], Started)
             and events_of(let["_id"], Started), 60,
             message="both job processes started")
    launcher.gate(let["_id"], run=True)
    (ended,) = wait_for(lambda: events_of(let["_id"], Exited), 60,
                        message="the admitted job to end")
    assert ended.returncode == EXIT_DONE
    assert os.path.exists(let_marker) and os.path.exists(let_result)
    # started first, still waiting at its gate: it ran nothing meanwhile
    assert not events_of(held["_id"], Exited)
    assert not os.path.exists(held_marker)

    launcher.gate(held["_id"], run=False)
    (dropped,) = wait_for(lambda: events_of(held["_id"], Exited), 60,
                          message="the dropped job's process to exit")
    assert dropped.returncode == EXIT_DROPPED
    assert not os.path.exists(held_marker)
    assert not os.path.exists(held_result)


def test_a_retired_launcher_still_lets_its_gated_job_run(core4_env, db,
                                                         tmp_path):
    """A project's launcher is retired when its files change, also between
    a gated start and the word to run (a batch of claimed jobs): the
    word still reaches the job, and the launcher ends after it."""
    launcher = ForkLauncher(env=worker_env())
    try:
        marker = str(tmp_path / "ran")
        doc = claimed(db, marker)
        start(launcher, doc, tmp_path)
        launcher.retire()
        launcher.gate(doc["_id"], run=True)
        seen = []
        wait_for(lambda: seen.extend(launcher.poll()) or launcher.finished(),
                 60, message="the retired launcher to end after its job")
        (ended,) = [e for e in seen if isinstance(e, Exited)]
        assert ended.returncode == EXIT_DONE and os.path.exists(marker)
    finally:
        launcher.close()
