"""Load-job helpers and data folders (issue 19, item 10), and the small
helpers ``find_job``/``remove_job`` of ``core4.queue.helper.functool``.

``folder.root`` points into the test's temporary folder. The jobs run in
real ``coco --worker`` processes (they import this module by its name
``tests.test_loadjob``, whose project is ``tests``).
"""

import datetime
import gzip
import os
import re

import pytest
from bson import ObjectId

import core4.config
from core4.config.folders import ensure_folders
from core4.error import Core4ConfigurationError
from core4.queue.helper import functool
from core4.queue.helper.job.base import CoreLoadJob
from core4.queue.queue import CoreQueue
from tests.support import wait_for, wait_state

FOLDERS = ("transfer", "proc", "arch", "temp")


class LoadJob(CoreLoadJob):
    """Moves every .txt file of transfer to proc and archives it."""

    author = "mra"

    def execute(self, compress=True, **kwargs):
        for path in self.list_transfer(r".+\.txt$"):
            work = self.move_proc(path)
            self.set_source(work)
            print("ARCHIVED", self.move_archive(work, compress=compress))


@pytest.fixture
def root(core4_env, tmp_path, monkeypatch):
    """``folder.root`` of the test (not yet created)."""
    path = tmp_path / "data"
    monkeypatch.setenv("CORE4_OPTION_folder__root", str(path))
    core4.config.reset_config()
    return str(path)


def touch(*parts, text=""):
    path = os.path.join(*parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


# folders ---------------------------------------------------------------------

def test_get_folder_and_ensure_folders(root):
    config = core4.config.get_config()
    assert config.get_folder("root") == root
    for key, name in zip(("transfer", "process", "archive", "temp"),
                         FOLDERS):
        assert config.get_folder(key) == os.path.join(root, name)
    with pytest.raises(Core4ConfigurationError) as info:
        config.get_folder("nowhere")
    assert "unknown folder 'nowhere'" in str(info.value)
    assert not os.path.exists(root)
    created = ensure_folders(config)
    assert created == [root] + [os.path.join(root, n) for n in FOLDERS]
    assert all(os.path.isdir(path) for path in created)
    assert ensure_folders(config) == []


def test_execute_creates_the_folders(root):
    doc = functool.execute(LoadJob)
    assert doc["state"] == "complete"
    for name in FOLDERS:
        assert os.path.isdir(os.path.join(root, name))


def test_worker_creates_the_folders(root, start_worker):
    """Needs the worker to call core4.config.folders.ensure_folders at
    start."""
    start_worker()
    for name in FOLDERS:
        assert os.path.isdir(os.path.join(root, name)), name


# CoreLoadJob -------------------------------------------------------------------

def test_list_and_make_files(root):
    job = LoadJob()
    assert job.project == "tests"
    transfer = job.config.get_folder("transfer")
    assert job.list_transfer() == []
    for name in ("test3.txt", "test1.txt", "test2.txt", "other.csv"):
        touch(transfer, "tests", name)
    os.makedirs(os.path.join(transfer, "tests", "sub.txt"))   # not a file
    touch(transfer, "base", "in-base.txt")
    expected = [os.path.join(transfer, "tests", name) for name in (
        "other.csv", "test1.txt", "test2.txt", "test3.txt")]
    assert job.list_transfer() == expected
    assert job.list_transfer(r".+\.txt$") == expected[1:]
    assert job.list_transfer(".+3.+") == expected[3:]
    assert job.list_transfer(re.compile(".+3.+")) == expected[3:]
    assert job.list_transfer(base="base") == [
        os.path.join(transfer, "base", "in-base.txt")]
    assert job.list_proc() == []
    made = job.make_proc("sub/dir/x.txt")
    assert made == os.path.join(root, "proc", "tests", "sub", "dir", "x.txt")
    assert os.path.isdir(os.path.dirname(made)) and not os.path.exists(made)
    assert job.make_transfer("y.txt", base="other") == os.path.join(
        transfer, "other", "y.txt")
    temp = job.make_temp()
    assert os.path.dirname(temp) == os.path.join(root, "temp")
    assert temp != job.make_temp() and not os.path.exists(temp)
    folder = job.make_temp(folder=True)
    assert os.path.isdir(folder)
    assert job.make_temp("a/b.txt") == os.path.join(root, "temp", "a",
                                                    "b.txt")


def test_move_and_archive(root):
    job = LoadJob()
    source = touch(job.config.get_folder("transfer"), "tests", "t1.txt",
                   text="hello")
    work = job.move_proc(source)
    assert work == os.path.join(root, "proc", "tests", "t1.txt")
    assert not os.path.exists(source) and open(work).read() == "hello"
    assert job.list_proc() == [work]
    assert job.move_transfer(work) == source and os.path.exists(source)
    work = job.move_proc(source)
    with pytest.raises(RuntimeError):
        job.move_archive(work)          # the job never started
    job.__dict__["started_at"] = datetime.datetime(
        2018, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    with pytest.raises(RuntimeError):
        job.move_archive(work)          # no _id
    job.__dict__["_id"] = ObjectId()
    plain = job.move_archive(work, compress=False)
    assert plain == os.path.join(root, "arch", "tests", "2018", "01", "02",
                                 str(job._id), "t1.txt")
    assert open(plain).read() == "hello" and not os.path.exists(work)
    packed = job.move_archive(plain)
    assert packed == plain + ".gz" and not os.path.exists(plain)
    with gzip.open(packed, "rt") as handle:
        assert handle.read() == "hello"
    assert sorted(os.listdir(os.path.dirname(packed))) == ["t1.txt.gz"]


def test_archive_stamp_from_config(root, tmp_path, monkeypatch):
    """``job.archive_stamp`` names the archive's sub folders (needs the key
    in the configuration schema)."""
    local = tmp_path / "stamp.yaml"
    local.write_text("job:\n  archive_stamp: '{year}-{month:02d}/{_id}'\n")
    monkeypatch.setenv("CORE4_CONFIG", str(local))
    core4.config.reset_config()
    job = LoadJob()
    job.__dict__.update(started_at=datetime.datetime(2020, 3, 4, 5, 6),
                        _id=ObjectId())
    source = touch(job.config.get_folder("process"), "tests", "s.txt")
    assert job.move_archive(source, compress=False) == os.path.join(
        root, "arch", "tests", "2020-03", str(job._id), "s.txt")


def test_worker_runs_a_load_job(root, db, start_worker):
    worker = start_worker()
    transfer = os.path.join(root, "transfer", "tests")
    touch(transfer, "a.txt", text="A")
    touch(transfer, "b.txt", text="B")
    touch(transfer, "keep.csv")
    _id = CoreQueue().enqueue(LoadJob)._id
    doc = wait_state(db, _id, "complete", timeout=60, worker=worker)
    started = doc["started_at"]
    folder = os.path.join(root, "arch", "tests", "%04d" % started.year,
                          "%02d" % started.month, "%02d" % started.day,
                          str(_id))
    assert sorted(os.listdir(folder)) == ["a.txt.gz", "b.txt.gz"]
    assert os.listdir(transfer) == ["keep.csv"]
    assert os.listdir(os.path.join(root, "proc", "tests")) == []
    assert doc["sources"] == ["a.txt", "b.txt"]


# functool.find_job / remove_job -------------------------------------------------

def test_find_job_and_remove_job(core4_env, db):
    queue = CoreQueue()
    first = queue.enqueue(LoadJob)._id
    second = queue.enqueue("core4.queue.helper.job.DummyJob", sleep=1)._id
    assert [doc["_id"] for doc in functool.find_job()] == [first, second]
    assert [doc["_id"] for doc in functool.find_job(
        name="tests.test_loadjob.LoadJob")] == [first]
    assert [doc["_id"] for doc in functool.find_job(
        {"args.sleep": 1}, state="pending")] == [second]
    assert functool.find_job({"state": "running"}) == []
    functool.remove_job(first)
    wait_for(lambda: db.sys_queue.find_one({"_id": first}) is None
             or db.sys_queue.find_one({"_id": first}).get("removed_at"),
             10, message="the removal of %s" % first)
