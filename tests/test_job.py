"""Tests of core4.queue.job.CoreJob: properties, precedence, validation,
abstract jobs, the loader and the stored job document."""

import datetime
import getpass
import os
import socket
import sys

import pytest
from bson import ObjectId

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # makes tests.jobs importable by its dotted name
    sys.path.insert(0, ROOT)

import core4.config  # noqa: E402
from core4.error import (Core4ConfigurationError, Core4UsageError,  # noqa
                         CoreJobAbstract, CoreJobInvalid,
                         CoreJobModuleError, CoreJobModuleNotFound,
                         CoreJobNotAJob, CoreJobNotFound)
from core4.mongo import now  # noqa: E402
from core4.queue.job import CoreJob  # noqa: E402
from core4.queue.loader import load_job_class, make_job  # noqa: E402
from core4.queue.queue import CoreQueue  # noqa: E402
from core4.queue import validate  # noqa: E402
from core4.queue.validate import PROPERTIES  # noqa: E402
from tests.jobs import mod  # noqa: E402

DEFAULTS = dict(attempts=1, defer_time=300, defer_max=3600, error_time=600,
                zombie_time=1800, max_lost=3, max_parallel=15, priority=0,
                progress_interval=5, force=False, wall_time=None,
                worker=None, schedule=None, dependency=[], chain=[], tag=[])


def use_local(tmp_path, monkeypatch, text):
    """Point CORE4_CONFIG at a local yaml with ``text``."""
    path = tmp_path / "job-local.yaml"
    path.write_text(text)
    monkeypatch.setenv("CORE4_CONFIG", str(path))
    core4.config.reset_config()


# properties -----------------------------------------------------------------

def test_defaults(core4_env):
    job = mod.MyJob()
    for key, value in DEFAULTS.items():
        assert getattr(job, key) == value, key
        assert type(getattr(job, key)) is type(value), key
    assert job.name == "tests.jobs.mod.MyJob"
    assert job.args == {}
    job.validate()


def test_defaults_come_from_job_config(core4_env, tmp_path, monkeypatch):
    use_local(tmp_path, monkeypatch,
              "job:\n  attempts: 7\n  defer_time: 42\n  wall_time: 99\n")
    job = mod.MyJob()
    assert (job.attempts, job.defer_time, job.wall_time) == (7, 42, 99)
    assert job.error_time == 600


def test_precedence(core4_env, tmp_path, monkeypatch):
    use_local(tmp_path, monkeypatch, (
        "job:\n  error_time: 30\n  zombie_time: 40\n"
        "tests:\n  jobs:\n    mod:\n      ClassJob:\n"
        "        attempts: 3\n        priority: 6\n        tag: [cfg]\n"))
    job = mod.ClassJob()
    assert job.attempts == 3             # config at class path > class attr
    assert job.priority == 6
    assert job.defer_time == 10          # class attribute > job defaults
    assert job.error_time == 20          # class attribute > job config
    assert job.zombie_time == 40         # job config > package defaults
    assert job.tag == ["cfg"]            # a list, though config is frozen
    job.validate()
    job = mod.ClassJob(attempts=4, priority=-1, zombie_time=50)
    assert (job.attempts, job.priority, job.zombie_time) == (4, -1, 50)
    # the class path of ClassJob does not leak into other classes
    assert mod.MyJob().attempts == 1


def test_non_property_kwargs_become_args(core4_env):
    job = mod.MyJob(a=1, b="x", attempts=2, tag=["t"])
    assert job.args == {"a": 1, "b": "x"}
    assert job.attempts == 2 and job.tag == ["t"]
    assert "a" not in PROPERTIES


def test_schedule_refused_at_enqueue(core4_env):
    with pytest.raises(CoreJobInvalid, match="schedule"):
        mod.MyJob(schedule="0 * * * *")
    with pytest.raises(CoreJobInvalid, match="schedule"):
        CoreQueue().enqueue("tests.jobs.mod.MyJob", schedule="0 * * * *")
    assert core4_env.db().sys_queue.count_documents({}) == 0


def test_schedule_dependency_chain_not_inherited(core4_env):
    parent = mod.Parent()
    assert parent.schedule == "0 * * * *"
    assert parent.dependency == ["tests.jobs.mod.MyJob"]
    assert parent.chain == ["tests.jobs.mod.ClassJob"]
    child = mod.Child()
    assert child.schedule is None
    assert child.dependency == [] and child.chain == []
    assert child.tag == ["parent"]       # tag and attempts are inherited
    assert child.attempts == 3
    child.validate()


def test_author_required_on_class_itself(core4_env):
    mod.Parent().validate()
    with pytest.raises(CoreJobInvalid, match="author"):
        mod.NoAuthorChild().validate()
    with pytest.raises(CoreJobInvalid, match="author"):
        make_job("tests.jobs.mod.NoAuthorChild")


def test_frozen_after_construction(core4_env):
    job = mod.MyJob(a=1)
    for key, value in (("attempts", 5), ("priority", 1), ("tag", ["x"]),
                       ("args", {}), ("name", "x.y.Z"), ("_id", None),
                       ("state", "complete")):
        with pytest.raises(Core4UsageError):
            setattr(job, key, value)
    assert job.attempts == 1 and job.args == {"a": 1}
    job.my_counter = 3                   # other attributes may be set
    assert job.my_counter == 3


def test_list_properties_not_shared(core4_env, monkeypatch):
    # fresh lists, so a leak cannot spoil other tests of this session
    for key in ("tag", "chain", "dependency"):
        monkeypatch.setitem(validate.EMPTY, key, [])
    monkeypatch.setattr(mod.Parent, "dependency", ["tests.jobs.mod.MyJob"])
    first = mod.MyJob()
    first.tag.append("leak")
    first.chain.append("x.y.Z")
    assert mod.MyJob().tag == []
    assert mod.MyJob().chain == []
    parent = mod.Parent()
    parent.dependency.append("x.y.Z")
    assert mod.Parent().dependency == ["tests.jobs.mod.MyJob"]
    assert mod.Parent.dependency == ["tests.jobs.mod.MyJob"]


def test_config_is_read_only(core4_env):
    job = mod.MyJob()
    assert job.config.job.attempts == 1
    assert job.config["job"]["defer_time"] == 300
    with pytest.raises(Core4ConfigurationError):
        job.config.job.attempts = 5
    with pytest.raises(Core4ConfigurationError):
        job.config["job"]["attempts"] = 5
    assert job.config.job.attempts == 1


# validate -------------------------------------------------------------------

@pytest.mark.parametrize("attr,value", [
    ("attempts", 0), ("attempts", "3"), ("attempts", True),
    ("attempts", -2), ("priority", 1.5), ("force", "yes"), ("force", 1),
    ("defer_time", -1), ("defer_time", 0), ("max_parallel", 0),
    ("worker", ""), ("worker", 3), ("tag", "x"), ("tag", ["a", ""]),
    ("chain", "x.y.Z"), ("dependency", [1]), ("wall_time", "1h"),
    ("progress_interval", 0), ("zombie_time", None), ("error_time", "x"),
])
def test_validate_rejects(core4_env, attr, value):
    job = mod.MyJob(**{attr: value})
    with pytest.raises(CoreJobInvalid) as info:
        job.validate()
    message = str(info.value)
    assert attr in message
    assert repr(value) in message


def test_validate_rejects_bad_schedule(core4_env):
    bad = type("BadCron", (mod.MyJob,), {"author": "mra",
                                         "schedule": "not cron"})
    with pytest.raises(CoreJobInvalid) as info:
        bad().validate()
    assert "schedule" in str(info.value)
    assert "'not cron'" in str(info.value)


def test_validate_accepts_lists_and_cron(core4_env):
    job = mod.MyJob(tag=["a", "b"], chain=["x.y.Z"],
                    dependency=["tests.jobs.mod.ClassJob", "a.b.C"],
                    max_parallel=None, wall_time=3600, priority=-5,
                    force=True, worker="w1", defer_time=0.5)
    job.validate()
    assert job.tag == ["a", "b"] and job.chain == ["x.y.Z"]
    assert job.dependency == ["tests.jobs.mod.ClassJob", "a.b.C"]
    cron = mod.CronJob()
    cron.validate()
    assert cron.schedule == "*/5 * * * *"


def test_validate_rejects_bad_arg_names(core4_env):
    with pytest.raises(CoreJobInvalid, match="a.b"):
        mod.MyJob(args={"a.b": 1}).validate()


# abstract jobs and the loader -----------------------------------------------

def test_abstract_cannot_be_enqueued(core4_env):
    queue = CoreQueue()
    with pytest.raises(CoreJobAbstract):
        queue.enqueue(mod.AbstractJob)
    with pytest.raises(CoreJobAbstract):
        queue.enqueue("tests.jobs.mod.AbstractJob")
    assert core4_env.db().sys_queue.count_documents({}) == 0
    job = queue.enqueue("tests.jobs.mod.ConcreteJob")
    doc = core4_env.db().sys_queue.find_one({"_id": job._id})
    assert doc["name"] == "tests.jobs.mod.ConcreteJob"
    with pytest.raises(CoreJobAbstract):
        load_job_class(CoreJob)


@pytest.mark.parametrize("name,error", [
    ("tests.jobs.nosuchmodule.MyJob", CoreJobModuleNotFound),
    ("nosuchpackage_core4.mod.MyJob", CoreJobModuleNotFound),
    ("tests.jobs.mod.NoSuchJob", CoreJobNotFound),
    ("tests.jobs.broken.MyJob", CoreJobModuleError),
    ("tests.jobs.mod.NotAJob", CoreJobNotAJob),
    ("tests.jobs.mod.CoreJob", CoreJobAbstract),
    ("os.path", CoreJobNotAJob),
    ("MyJob", CoreJobNotFound),
    ("tests..mod.MyJob", CoreJobModuleError),
    ("tests.jobs.mod.My-Job", CoreJobNotFound),
    ("", CoreJobNotFound),
])
def test_loader_errors_are_distinct(name, error):
    with pytest.raises(error) as info:
        load_job_class(name)
    assert type(info.value) is error
    assert str(info.value)


def test_loader_error_messages():
    with pytest.raises(CoreJobModuleNotFound, match="nosuchmodule"):
        load_job_class("tests.jobs.nosuchmodule.MyJob")
    with pytest.raises(CoreJobNotFound, match="NoSuchJob"):
        load_job_class("tests.jobs.mod.NoSuchJob")
    with pytest.raises(CoreJobNotFound, match="no_such_dependency"):
        load_job_class("tests.jobs.broken.MyJob")
    with pytest.raises(CoreJobNotFound, match="qualified"):
        load_job_class("MyJob")


def test_reexported_name(core4_env):
    job = CoreQueue().enqueue("core4.queue.helper.job.DummyJob", sleep=1)
    doc = core4_env.db().sys_queue.find_one({"_id": job._id})
    assert doc["name"] == "core4.queue.helper.job.example.DummyJob"
    assert job.name == doc["name"]
    assert doc["args"] == {"sleep": 1}


# storage --------------------------------------------------------------------

def test_serialise_round_trip(core4_env):
    job = mod.ClassJob(a=1, b=["x", 2], c={"d": None}, attempts=4,
                       tag=["t"], force=True, worker="w1", wall_time=60,
                       dependency=["a.b.C"], chain=["d.e.F"])
    doc = job.serialise()
    assert doc["name"] == "tests.jobs.mod.ClassJob"
    assert "_id" not in doc and "schedule" not in doc
    back = mod.ClassJob.deserialise(doc)
    assert back.args == job.args
    for key, prop in PROPERTIES.items():
        assert getattr(back, key) == getattr(job, key), key
    back.validate()
    with pytest.raises(Core4UsageError):
        back.attempts = 1


def test_enqueued_document(core4_env):
    before = now()
    job = CoreQueue().enqueue("tests.jobs.mod.MyJob", a=1, priority=3,
                              attempts=2)
    after = now()
    docs = list(core4_env.db().sys_queue.find())
    assert len(docs) == 1
    doc = docs[0]
    assert isinstance(doc["_id"], ObjectId) and doc["_id"] == job._id
    assert doc["name"] == "tests.jobs.mod.MyJob"
    assert doc["args"] == {"a": 1}
    assert doc["state"] == "pending"
    assert doc["attempts"] == 2 and doc["attempts_left"] == 2
    assert doc["trial"] == 0
    assert doc["priority"] == 3
    assert bool(doc["force"]) is False
    assert isinstance(doc["enqueued"]["at"], datetime.datetime)
    assert doc["enqueued"]["at"].tzinfo is not None
    assert before <= doc["enqueued"]["at"] <= after
    assert doc["enqueued"]["hostname"] == socket.gethostname()
    assert doc["enqueued"]["username"] == getpass.getuser()
    assert isinstance(doc["query_at"], datetime.datetime)
    assert doc["query_at"].tzinfo is not None
    assert before <= doc["query_at"] <= after
    assert doc["prog"]["value"] == 0.0
    # the stored document rebuilds the same job
    back = mod.MyJob.deserialise(doc)
    assert back._id == job._id and back.args == {"a": 1}
    assert (back.attempts, back.priority, back.force) == (2, 3, False)
