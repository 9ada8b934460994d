"""Upstream core4's exception classes still catch (issue 19, item 9): a
job module that is unknown, unimportable or not a module name raises an
ImportError; an object that is not an enqueueable job class a TypeError;
an invalid job an AssertionError. core4's own classes and one-line
messages stay."""

import os

import pytest

import core4.config
from core4.error import (CoreJobAbstract, CoreJobInvalid,
                         CoreJobModuleError, CoreJobModuleNotFound,
                         CoreJobNotAJob, CoreJobNotFound)
from core4.queue.loader import load_job_class, make_job
from core4.queue.queue import CoreQueue
from tests.rjobs import jobs

JOBS = "tests.rjobs.jobs."


@pytest.mark.parametrize("name,own", [
    ("tests.rjobs.nosuchmodule.MyJob", CoreJobModuleNotFound),
    ("nosuchpackage_core4_i19.jobs.MyJob", CoreJobModuleNotFound),
    ("123x.job", CoreJobModuleError),             # not a module name
    ("tests.jobs.broken.MyJob", CoreJobModuleError),  # fails to import
])
def test_unknown_module_is_an_import_error(core4_env, name, own):
    with pytest.raises(ImportError) as info:
        CoreQueue().enqueue(name)
    assert isinstance(info.value, own)
    assert isinstance(info.value, CoreJobNotFound)
    assert "\n" not in str(info.value) and name.split(".")[0] in str(
        info.value)
    with pytest.raises(ImportError):
        load_job_class(name)


def test_missing_module_is_a_module_not_found_error(core4_env):
    with pytest.raises(ModuleNotFoundError):
        make_job("tests.rjobs.nosuchmodule.MyJob")


@pytest.mark.parametrize("obj,own", [
    (os, CoreJobNotAJob),                     # a module
    (object(), CoreJobNotAJob),               # an instance
    (jobs.NotAJob, CoreJobNotAJob),           # a class, not a CoreJob
    (JOBS + "NotAJob", CoreJobNotAJob),
    ("os.path", CoreJobNotAJob),
    (jobs.AbstractBaseJob, CoreJobAbstract),  # abstract
    (JOBS + "AbstractBaseJob", CoreJobAbstract),
])
def test_not_a_job_class_is_a_type_error(core4_env, obj, own):
    with pytest.raises(TypeError) as info:
        CoreQueue().enqueue(obj)
    assert type(info.value) is own
    assert "\n" not in str(info.value)


def test_invalid_job_is_an_assertion_error(core4_env, tmp_path,
                                           monkeypatch):
    with pytest.raises(AssertionError, match="author") as info:
        CoreQueue().enqueue(JOBS + "NoAuthorJob")
    assert type(info.value) is CoreJobInvalid
    with pytest.raises(AssertionError, match="attempts"):
        CoreQueue().enqueue(JOBS + "CompleteJob", attempts="x")
    with pytest.raises(AssertionError, match="priority"):
        jobs.CompleteJob(priority=1.5).validate()
    # a wrong value set in the configuration, at the class's path
    path = tmp_path / "errors-local.yaml"
    path.write_text("tests:\n  rjobs:\n    jobs:\n      CompleteJob:\n"
                    "        error_time: -1\n")
    monkeypatch.setenv("CORE4_CONFIG", str(path))
    core4.config.reset_config()
    with pytest.raises(AssertionError, match="error_time"):
        make_job(JOBS + "CompleteJob")
    assert CoreQueue().sys.queue.count_documents({}) == 0


def test_explicit_none_for_a_number_is_invalid(core4_env):
    # upstream: "defer_time = None" in the class is no silent default
    with pytest.raises(AssertionError, match="defer_time"):
        make_job(JOBS + "NoneDeferTimeJob")
    with pytest.raises(AssertionError, match="defer_time"):
        jobs.NoneDeferTimeJob().validate()
    # an enqueue keyword still sets it
    assert make_job(JOBS + "NoneDeferTimeJob", defer_time=5).defer_time == 5
