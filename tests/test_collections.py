"""Project collections in job code (issue 19, item 1): a ``!connect`` value
read from the configuration is a pymongo collection, and inside a running
job the documents written through it carry the job's ``_id`` and source.

The project ``c4stamp`` (a package with ``__project__ = "core4"`` and a
``c4stamp.yaml`` holding ``!connect`` values) is written to a temporary
folder on ``sys.path`` and on the ``PYTHONPATH`` of the real ``coco
--worker`` processes that run its jobs.
"""

import os
import sys

import pymongo
import pytest

import core4.config
import core4.error
import core4.mongo
from core4.queue import stamp
from core4.queue.queue import CoreQueue
from tests.support import wait_state

PROJECT = "c4stamp"

PROJECT_YAML = """\
sales: !connect mongodb://sales
deep:
  deeper:
    inner: !connect mongodb://inner
"""

PROJECT_JOBS = '''\
from core4.queue.job import CoreJob


class WriteBeforeSource(CoreJob):
    author = "mra"

    def execute(self, **kwargs):
        self.config.c4stamp.sales.insert_one({"early": True})


class WriteSales(CoreJob):
    author = "mra"

    def execute(self, files=(), **kwargs):
        sales = self.config.c4stamp.sales
        for name in files:
            self.set_source("/data/incoming/" + name)
            sales.insert_one({"file": name})
            sales.update_one({"key": name}, {"$set": {"seen": 1}},
                             upsert=True)
        self.set_source("/elsewhere/" + files[0])     # known: not added
        self.config.c4stamp.deep.deeper.inner.insert_many(
            [{"file": files[0]}, {"file": files[0], "n": 2}])
        self.config.sys.cookie.insert_one({"_id": "unstamped-" + files[0]})
        print("SOURCE", self.get_source(), "SOURCES", self.sources)
'''


# fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    """The folder holding the package ``c4stamp``."""
    base = tmp_path_factory.mktemp("stamp-project")
    package = base / PROJECT
    package.mkdir()
    (package / "__init__.py").write_text(
        '__project__ = "core4"\n__version__ = "0.0.1"\n')
    (package / (PROJECT + ".yaml")).write_text(PROJECT_YAML)
    (package / "jobs.py").write_text(PROJECT_JOBS)
    return str(base)


@pytest.fixture
def project(core4_env, project_dir, monkeypatch):
    """``c4stamp`` importable here and in the workers started by
    :func:`start_worker`; yields the test's environment."""
    monkeypatch.syspath_prepend(project_dir)
    monkeypatch.setenv("PYTHONPATH", project_dir + os.pathsep
                       + os.environ.get("PYTHONPATH", ""))
    core4.config.reset_config()
    yield core4_env
    core4.config.reset_config()


# a !connect value is a collection ------------------------------------------

def test_connect_value_is_a_collection(project, db):
    config = core4.config.get_config(PROJECT)
    sales = config.c4stamp.sales
    # the configuration's names, as in the original core4
    assert (sales.database, sales.collection) == (project.database, "sales")
    assert sales.path == "c4stamp.sales" and not sales.is_system()
    # pymongo's attributes and methods, connected on first use
    assert sales.name == "sales"
    assert sales.full_name == "%s.sales" % project.database
    result = sales.insert_one({"a": 1})
    assert sales.find_one({"_id": result.inserted_id})["a"] == 1
    sales.insert_many([{"a": 2}, {"a": 3}])
    assert sales.count_documents({}) == 3
    assert sorted(doc["a"] for doc in sales.find()) == [1, 2, 3]
    assert isinstance(sales.connect(), pymongo.collection.Collection)
    assert sales["sub"].full_name == "%s.sales.sub" % project.database
    # any nesting
    inner = config.c4stamp.deep.deeper.inner
    inner.insert_one({"b": 1})
    assert db.inner.count_documents({}) == 1
    # outside a job nothing is stamped
    assert all("_job_id" not in doc and "_src" not in doc
               for doc in db.sales.find())
    # core4's own collections, read the same way
    config.sys.log.insert_one({"message": "probe"})
    assert [doc["message"] for doc in config.sys.log.find(
        {"message": "probe"})] == ["probe"]
    assert config.sys.queue.is_system()
    # core4.mongo.collection() keeps working
    raw = core4.mongo.collection(config.c4stamp.sales, config)
    assert raw.count_documents({}) == 3
    with pytest.raises(TypeError):
        iter(sales)


def test_writes_inside_a_running_job_are_stamped(project, db):
    queue = CoreQueue()
    job = queue.enqueue("c4stamp.jobs.WriteSales", files=["x.csv"])
    assert job.sources == [] and job.get_source() is None
    assert db.sys_queue.find_one({"_id": job._id})["sources"] == []
    sales = job.config.c4stamp.sales
    with stamp.running(job):
        assert stamp.current_job() is job
        with pytest.raises(AttributeError) as info:
            sales.insert_one({"early": 1})
        assert str(info.value).startswith("_id and _src must not be None")
        assert "set_source" in str(info.value)
        assert db.sales.count_documents({}) == 0

        job.set_source("/in/a.csv")
        assert job.get_source() == "a.csv"
        sales.insert_one({"k": "insert_one"})
        sales.insert_many([{"k": "insert_many"}, {"k": "insert_many"}])
        sales.update_one({"k": "upsert_one"}, {"$set": {"v": 1}},
                         upsert=True)
        sales.update_many({"k": "insert_many"}, {"$set": {"v": 2}})
        sales.replace_one({"k": "replace"}, {"k": "replace"}, upsert=True)
        sales.find_one_and_update({"k": "insert_one"}, {"$set": {"v": 3}})
        job.set_source("b.csv")
        requests = [pymongo.InsertOne({"k": "bulk_insert"}),
                    pymongo.UpdateOne({"k": "bulk_upsert"},
                                      {"$set": {"v": 4}}, upsert=True),
                    pymongo.UpdateMany({"k": "replace"}, {"$set": {"v": 5}}),
                    pymongo.ReplaceOne({"k": "bulk_replace"},
                                       {"k": "bulk_replace"}, upsert=True),
                    pymongo.DeleteOne({"k": "nothing"})]
        sales.bulk_write(requests)
        # the caller's update requests are not changed
        assert requests[1]._doc == {"$set": {"v": 4}}
        job.set_source("/other/a.csv")
        config = core4.config.get_config(PROJECT)     # any way to it
        config.c4stamp.deep.deeper.inner.insert_one({"k": "inner"})
        config.sys.cookie.insert_one({"_id": "not-stamped"})
    docs = {doc["k"]: doc for doc in db.sales.find()}
    assert set(docs) == {"insert_one", "insert_many", "upsert_one",
                         "replace", "bulk_insert", "bulk_upsert",
                         "bulk_replace"}
    for doc in list(db.sales.find()) + list(db.inner.find()):
        assert doc["_job_id"] == job._id, doc
    sources = {key: doc["_src"] for key, doc in docs.items()}
    assert sources == {"insert_one": "a.csv", "insert_many": "a.csv",
                       "upsert_one": "a.csv", "replace": "b.csv",
                       "bulk_insert": "b.csv", "bulk_upsert": "b.csv",
                       "bulk_replace": "b.csv"}
    assert db.inner.find_one()["_src"] == "a.csv"
    assert set(db.sys_cookie.find_one({"_id": "not-stamped"})) == {"_id"}
    # sources: base names, once each, in the job and its document
    assert job.sources == ["a.csv", "b.csv"]
    assert db.sys_queue.find_one({"_id": job._id})["sources"] == [
        "a.csv", "b.csv"]
    # after the job, nothing is stamped
    assert stamp.current_job() is None
    sales.insert_one({"k": "after"})
    assert "_job_id" not in db.sales.find_one({"k": "after"})


# real workers (need the runner to run execute() inside stamp.running) -----

def test_worker_job_writes_stamped_documents(project, db, start_worker):
    worker = start_worker()
    queue = CoreQueue()
    early = queue.enqueue("c4stamp.jobs.WriteBeforeSource")._id
    good = queue.enqueue("c4stamp.jobs.WriteSales",
                         files=["jan.csv", "feb.csv"])._id
    doc = wait_state(db, early, "error", timeout=60, worker=worker)
    assert "_id and _src must not be None" in \
        doc["last_error"]["exception"], doc["last_error"]
    assert db.sales.count_documents({"early": True}) == 0
    doc = wait_state(db, good, "complete", timeout=60, worker=worker)
    assert doc["sources"] == ["jan.csv", "feb.csv"]
    written = list(db.sales.find())
    assert len(written) == 4
    for item in written:
        assert item["_job_id"] == good, item
        assert item["_src"] == item.get("file", item.get("key")), item
    inner = list(db.inner.find())
    assert len(inner) == 2
    assert all(item["_job_id"] == good and item["_src"] == "jan.csv"
               for item in inner), inner
    assert set(db.sys_cookie.find_one({"_id": "unstamped-jan.csv"})) == {
        "_id"}
    messages = [rec["message"] for rec in db.sys_log.find(
        {"identifier": str(good)})]
    assert "set source [jan.csv]" in messages, messages
    assert "set source [feb.csv]" in messages, messages
    text = (db.sys_stdout.find_one({"_id": good}) or {}).get("stdout", "")
    assert "SOURCE jan.csv SOURCES ['jan.csv', 'feb.csv']" in text, text


def test_enqueued_sources_default(project):
    """``job.sources`` exists and is [] before a run (not only in
    workers)."""
    from core4.queue.loader import make_job
    job = make_job("c4stamp.jobs.WriteSales")
    assert job.sources == []
    assert job.serialise()["sources"] == []
    assert sys.modules["c4stamp.jobs"].WriteSales.qual_name() == \
        "c4stamp.jobs.WriteSales"


def test_connect_pickles_with_its_path():
    import pickle
    value = core4.config.Connect(None, "db", "coll", path="mypro.coll")
    back = pickle.loads(pickle.dumps(value))
    assert back == value and back.path == "mypro.coll"
    assert repr(back) == "Connect(url=None, database='db', collection='coll')"
    with pytest.raises(AttributeError):
        value._private     # never connects for private names


def test_unresolved_connect_names_the_problem():
    value = core4.config.Connect.parse("mongodb://coll")
    with pytest.raises(core4.error.Core4ConfigurationError) as info:
        value.find_one()
    assert "not resolved" in str(info.value)

