"""A worker about to claim a job *primes* its launcher's spare process for
it: the spare sets up the job's logging and imports its class while the
claim runs. A spare that imported a module for one job never runs another
(the claim may have been lost to another worker). Real fork launchers."""

import collections
import importlib
import json
import logging
import os
import sys
import textwrap
import time

import psutil
import pytest
from bson import ObjectId

from core4.config import get_config
from core4.queue.job import CoreJob
from core4.queue.launcher.environments import Environments
from core4.queue.launcher.launcher import Exited, ForkLauncher
from core4.queue.launcher.process import EXIT_DONE, read_result
from core4.queue.launcher.child import PRIME_TTL
from core4.queue.launcher.watchdog import write_renewal
from core4.queue.queue import CoreQueue
from tests.support import wait_for, worker_env

MODULE = textwrap.dedent('''
    """Imported by a primed spare: notes the importing pid, prints, logs;
    hangs while the file PRIME_HANG exists."""
    import logging
    import os
    import time

    from core4.queue.job import CoreJob

    if os.environ.get("PRIME_IMPORTS"):
        with open(os.environ["PRIME_IMPORTS"], "a") as handle:
            handle.write("%d\\n" % os.getpid())
    print("module imported")
    logging.getLogger("core4.primemod").warning("module imported")
    if os.path.exists(os.environ.get("PRIME_HANG", "/nonexistent")):
        time.sleep(600)


    class PrimedJob(CoreJob):
        """Writes its pid to ``marker``."""
        author = "test"

        def execute(self, marker, **kwargs):
            self.logger.info("primed job runs")
            with open(marker, "w") as handle:
                handle.write(str(os.getpid()))
''')


class MarkJob(CoreJob):
    """Writes its pid to ``marker``, and the path its log file handler was
    moved from (see ``FileHandler.move_to``) to ``marker.moved``."""
    author = "test"

    def execute(self, marker, **kwargs):
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))
        with open(marker + ".moved", "w") as handle:
            handle.write(json.dumps([
                getattr(h, "moved_from", None)
                for h in logging.getLogger("core4").handlers
                if hasattr(h, "move_to")]))


@pytest.fixture
def primed_module(tmp_path, monkeypatch):
    """A job module (not imported by the launcher) in ``tmp_path``; the
    pids that import it are appended to ``imports``."""
    folder = tmp_path / "mods"
    folder.mkdir()
    name = "primemod_%d" % os.getpid()
    (folder / (name + ".py")).write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    imports = tmp_path / "imports"
    env = worker_env(PRIME_IMPORTS=str(imports))
    env["PYTHONPATH"] = str(folder) + os.pathsep + env["PYTHONPATH"]
    launcher = ForkLauncher(env=env)
    yield name + ".PrimedJob", imports, launcher
    launcher.close()
    sys.modules.pop(name, None)


def claimed(db, name, marker):
    """The document of a just enqueued job, as a claim leaves it."""
    _id = CoreQueue().enqueue(name, marker=marker)._id
    doc = db.sys_queue.find_one({"_id": _id})
    doc.update(state="running", locked={"token": "t-%s" % _id})
    return doc


def run(launcher, doc, tmp_path):
    """Start ``doc``'s process and return its files once it ended."""
    base = str(tmp_path / str(doc["_id"]))
    launcher.start(doc, base + ".out", base + ".result", base + ".log")
    assert exited(launcher, doc["_id"], 60).returncode == EXIT_DONE
    return base


def exited(launcher, job_id, timeout, message="the job process to end"):
    """The launcher's :class:`Exited` event of the job ``job_id``."""
    seen = []
    (ended,) = wait_for(
        lambda: [e for e in seen + launcher.poll()
                 if seen.append(e) is None and isinstance(e, Exited)
                 and e.job_id == job_id], timeout, message=message)
    return ended


def pids(path):
    return [int(line) for line in path.read_text().split()]


Candidate = collections.namedtuple("Candidate", "id name")


def watch(tmp_path, renewed=True):
    """Watchdog settings of a job claimed now, with a lease file renewed
    now (or none)."""
    lease = str(tmp_path / "lease")
    if renewed:
        write_renewal(lease, time.monotonic())
    return {"lease_file": lease, "deadline": 60.0, "grace": 1.0,
            "claimed": time.monotonic()}


def gone(pid):
    """True once the process ``pid`` ended."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def prime(launcher, job_id, name, tmp_path, renewed=True):
    """Prime ``launcher`` for the job ``job_id`` as a worker does (files of
    its own: ``.prime``); return the primed log path."""
    base = str(tmp_path / str(job_id))
    assert launcher.prime(job_id, name, base + ".log.prime",
                          base + ".result.prime", watch(tmp_path, renewed))
    return base + ".log.prime"


def spare_of(launcher):
    """The pid of the launcher's spare once it is its only child."""
    children = wait_for(
        lambda: [c for c in psutil.Process(launcher.proc.pid).children()
                 if not gone(c.pid)] or None, 60,
        message="the launcher's spare")
    assert len(children) == 1
    return children[0].pid


def warm(launcher, db, tmp_path, name=__name__ + ".MarkJob"):
    """Run a first job of ``name`` so that the launcher is up with its
    spare, and the configuration of the job's project loaded."""
    run(launcher, claimed(db, name, str(tmp_path / "warm")), tmp_path)


def test_a_primed_spare_prepares_and_runs_its_job(primed_module, core4_env,
                                                  db, tmp_path):
    name, imports, launcher = primed_module
    warm(launcher, db, tmp_path, name)
    (warm_pid,) = pids(imports)
    marker = tmp_path / "ran"
    doc = claimed(db, name, str(marker))
    primed_log = prime(launcher, doc["_id"], name, tmp_path)
    # the class is imported ahead, before the job is handed over
    wait_for(lambda: len(pids(imports)) == 2, 60,
             message="the spare to import the job's module")
    base = run(launcher, doc, tmp_path)
    assert pids(imports) == [warm_pid, int(marker.read_text())]
    with open(base + ".log") as handle:
        records = [json.loads(line) for line in handle]
    # what the module logged on import, then the job's own records
    messages = [r["message"] for r in records]
    assert messages[0] == "module imported" and "primed job runs" in messages
    # (the spare's rehearsal with a stand-in job wrote nothing)
    assert {r["identifier"] for r in records[1:]} == {str(doc["_id"])}
    assert not os.path.exists(primed_log)
    with open(base + ".out") as handle:
        assert handle.read() == "module imported\n"


@pytest.mark.parametrize("told", [True, False],
                         ids=["unprimed", "not-told"])
def test_a_spare_primed_for_a_lost_claim_runs_no_other_job(
        told, primed_module, core4_env, db, tmp_path):
    """The worker tells the launcher when it lost the claim (``unprime``);
    without that word the next job does not take the spare either."""
    name, imports, launcher = primed_module
    warm(launcher, db, tmp_path)  # (both projects' configuration loaded)
    warm(launcher, db, tmp_path, name)
    lost = claimed(db, name, str(tmp_path / "lost"))
    primed_log = prime(launcher, lost["_id"], name, tmp_path)
    wait_for(lambda: len(pids(imports)) == 2 and os.path.exists(primed_log),
             60, message="the spare to import the job's module")
    primed_pid = pids(imports)[1]
    if told:
        launcher.unprime(lost["_id"])
        # at once, not after the launcher's timeout for primed spares
        assert PRIME_TTL >= 30
        wait_for(lambda: gone(primed_pid), 20,
                 message="the primed spare to be replaced")

    marker = tmp_path / "other"
    other = claimed(db, __name__ + ".MarkJob", str(marker))
    base = run(launcher, other, tmp_path)
    assert int(marker.read_text()) != primed_pid
    with open(base + ".out") as handle:
        assert "module imported" not in handle.read()
    assert not os.path.exists(primed_log)
    assert not os.path.exists(str(tmp_path / str(lost["_id"])) + ".log")


def test_a_prime_that_fails_does_not_keep_the_job_from_running(
        core4_env, db, tmp_path):
    launcher = ForkLauncher(env=worker_env())
    try:
        warm(launcher, db, tmp_path)
        spare = spare_of(launcher)
        doc = claimed(db, __name__ + ".MarkJob", str(tmp_path / "ran"))
        prime(launcher, doc["_id"], "tests.no_such_module_here.Job", tmp_path)
        run(launcher, doc, tmp_path)
        assert int((tmp_path / "ran").read_text()) == spare
    finally:
        launcher.close()


def test_a_worker_that_lost_the_claim_has_the_primed_spare_replaced(
        core4_env, db, tmp_path, monkeypatch):
    """:meth:`Environments.claim_primed`, as the worker claims: the spare
    primed meanwhile is killed once the claim came back without the job."""
    folder = tmp_path / "mods"
    folder.mkdir()
    name = "primelost_%d" % os.getpid()
    (folder / (name + ".py")).write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    importlib.import_module(name)  # here before PRIME_IMPORTS is set
    imports = tmp_path / "imports"
    for key, value in worker_env(PRIME_IMPORTS=str(imports)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", str(folder) + os.pathsep
                       + os.environ["PYTHONPATH"])
    envs = Environments(get_config(), "fork")
    try:
        warm(envs.default, db, tmp_path, name + ".PrimedJob")
        lost = claimed(db, name + ".PrimedJob", str(tmp_path / "lost"))

        def claim_lost(candidates):
            # the round trip: long enough for the spare to import (and log
            # into a file of its own, never the job's)
            base = str(tmp_path / str(candidates[0].id))
            wait_for(lambda: len(pids(imports)) == 2
                     and os.path.exists(base + ".log.prime"), 60,
                     message="the spare to import the job's module")
            assert not os.path.exists(base + ".log")
            return []

        candidate = Candidate(lost["_id"], name + ".PrimedJob")
        assert envs.claim_primed([candidate], claim_lost, str(tmp_path),
                                 True, watch(tmp_path)) == []
        primed = pids(imports)[1]
        assert PRIME_TTL >= 30  # (it is replaced at once)
        wait_for(lambda: gone(primed), 20,
                 message="the primed spare to be replaced")
        # what it logged when it imported goes with it (once reaped)
        base = str(tmp_path / str(lost["_id"]))
        wait_for(lambda: not os.path.exists(base + ".log.prime"), 20,
                 message="the primed spare's log to be removed")
        assert not os.path.exists(base + ".log")
    finally:
        envs.close()
        sys.modules.pop(name, None)


@pytest.fixture
def hanging(core4_env, db, tmp_path):
    """A fork launcher, warm, whose next import of the job module
    ``name`` (``.PrimedJob``) hangs: ``(name, imports, launcher)``."""
    folder = tmp_path / "mods"
    folder.mkdir()
    name = "primehang_%d" % os.getpid()
    (folder / (name + ".py")).write_text(MODULE)
    imports, hang = tmp_path / "imports", tmp_path / "hang"
    env = worker_env(PRIME_IMPORTS=str(imports), PRIME_HANG=str(hang))
    env["PYTHONPATH"] = str(folder) + os.pathsep + env["PYTHONPATH"]
    launcher = ForkLauncher(env=env)
    sys.path.insert(0, str(folder))
    try:
        # (the project's configuration loaded, the launcher idle)
        warm(launcher, db, tmp_path, name + ".PrimedJob")
        hang.write_text("")
        yield name, imports, launcher
    finally:
        launcher.close()
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)


def test_a_spare_hanging_in_its_primed_import_is_fenced(hanging,
                                                        tmp_path):
    """A module whose import hangs keeps the primed spare from reading its
    command; its watchdog, armed before the import, stops it when its
    worker is gone (here: no lease file)."""
    name, imports, launcher = hanging
    prime(launcher, ObjectId(), name + ".PrimedJob", tmp_path,
          renewed=False)
    wait_for(lambda: len(pids(imports)) == 2, 60,
             message="the spare to begin the import")
    spare = pids(imports)[1]
    # (long before the launcher replaces a spare whose job never came)
    assert PRIME_TTL >= 30
    wait_for(lambda: gone(spare), 20,
             message="the watchdog to stop the hanging spare")


def test_a_spare_primed_without_an_import_runs_the_next_job(core4_env, db,
                                                            tmp_path):
    """A prime for a job whose module the launcher has (core4's own) imports
    nothing: the spare stays free for the next job, whose logging is its
    own."""
    launcher = ForkLauncher(env=worker_env())
    try:
        warm(launcher, db, tmp_path)
        spare = spare_of(launcher)
        lost = ObjectId()
        lost_log = prime(launcher, lost,
                         "core4.queue.helper.job.example.NoopJob", tmp_path)
        marker = tmp_path / "next"
        doc = claimed(db, __name__ + ".MarkJob", str(marker))
        base = run(launcher, doc, tmp_path)
        assert int(marker.read_text()) == spare  # (not replaced)
        with open(base + ".log") as handle:
            records = [json.loads(line) for line in handle]
        assert records and {r["identifier"] for r in records} == {
            str(doc["_id"])}
        assert not os.path.exists(lost_log)
    finally:
        launcher.close()


def test_a_job_fenced_in_its_primed_import_is_recorded_lost(hanging, db,
                                                            tmp_path):
    """The job was handed to its primed spare while the spare still
    imports (it hangs); its worker stops renewing the lease: the watchdog
    armed at the prime fences it, and its outcome ``lost`` reaches the
    job's own result file (the worker then puts the job back)."""
    name, imports, launcher = hanging
    doc = claimed(db, name + ".PrimedJob", str(tmp_path / "never"))
    base = str(tmp_path / str(doc["_id"]))
    settings = watch(tmp_path)
    settings["deadline"] = 10.0  # (renewed now, never again)
    assert launcher.prime(doc["_id"], name + ".PrimedJob",
                          base + ".log.prime", base + ".result.prime",
                          settings)
    launcher.start(doc, base + ".out", base + ".result", base + ".log",
                   settings)
    exited(launcher, doc["_id"], 90, "the watchdog to fence the job")
    assert read_result(base + ".result")["state"] == "lost"
    for path in (base + ".result.prime", base + ".log.prime"):
        assert not os.path.exists(path)
    assert not (tmp_path / "never").exists()


def test_a_spare_primed_for_its_job_hands_its_logging_to_the_job(
        core4_env, db, tmp_path):
    """A prime whose import logs nothing opens no file; the job then runs
    in the primed spare with the logging the prime set up, and its records
    go to the job's own log file (none to the ``.prime`` file)."""
    launcher = ForkLauncher(env=worker_env())
    try:
        warm(launcher, db, tmp_path)
        spare = spare_of(launcher)
        marker = tmp_path / "primed"
        doc = claimed(db, __name__ + ".MarkJob", str(marker))
        primed_log = prime(launcher, doc["_id"], doc["name"], tmp_path)
        base = run(launcher, doc, tmp_path)
        assert int(marker.read_text()) == spare
        # the handler the prime set up, moved (not a new one)
        assert json.loads((tmp_path / "primed.moved").read_text()) == [
            primed_log]
        with open(base + ".log") as handle:
            records = [json.loads(line) for line in handle]
        assert [r["message"] for r in records] == [
            "start execution", "done execution with [complete]"]
        assert {r["identifier"] for r in records} == {str(doc["_id"])}
        assert not os.path.exists(primed_log)
    finally:
        launcher.close()
