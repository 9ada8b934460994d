"""Tests of core4.config: cascade, schema, DEFAULT, !connect, ConfigMap."""

import datetime
import os
import pickle
from collections.abc import Mapping

import pytest

import core4.config
from core4.config import (ConfigMap, Connect, class_config, get_config,
                          load_config, reset_config)
from core4.config import cascade
from core4.error import Core4ConfigurationError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real local files or CORE4_* variables leak into a test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("CORE4_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cascade, "SYSTEM_LOCAL",
                        str(tmp_path / "etc" / "local.yaml"))
    reset_config()
    yield home
    reset_config()


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def make_project(tmp_path, monkeypatch, yaml_text=None, name="mypro",
                 marker='__project__ = "core4"\n'):
    root = tmp_path / "projects"
    write(root / name / "__init__.py", '"""A project."""\n' + marker)
    if yaml_text is not None:
        write(root / name / (name + ".yaml"), yaml_text)
    monkeypatch.syspath_prepend(str(root))
    return root / name


def local(tmp_path, text):
    return write(tmp_path / "local.yaml", text)


def test_job_defaults():
    cfg = load_config(environ={})
    expected = dict(attempts=1, defer_time=300, defer_max=3600,
                    error_time=600, zombie_time=1800, max_parallel=15,
                    priority=0, progress_interval=5, force=False,
                    wall_time=None, worker=None)
    for key, value in expected.items():
        assert cfg.job[key] == value, key
        assert type(cfg.job[key]) is type(value), key


def test_package_defaults_folders_and_sys(isolated):
    cfg = load_config(environ={})
    assert cfg.folder.home == str(isolated / ".core4")
    assert cfg.folder.root == str(isolated / ".core4" / "data")
    assert cfg.folder.temp == str(isolated / ".core4" / "data" / "temp")
    assert cfg.folder.process == str(isolated / ".core4" / "data" / "proc")
    assert cfg.sys.queue == Connect(None, "core4", "sys_queue")
    assert cfg.DEFAULT.mongo_url is None
    assert cfg.DEFAULT.mongo_database == "core4"


def test_folder_expansion(tmp_path, isolated):
    path = local(tmp_path, "folder:\n  home: ~/h\n  root: ~/data\n"
                           "  transfer: t\n  temp: /abs/tmp\n")
    cfg = load_config(local_file=path, environ={})
    assert cfg.folder.home == str(isolated / "h")
    assert cfg.folder.root == str(isolated / "data")
    assert cfg.folder.transfer == str(isolated / "data" / "t")
    assert cfg.folder.temp == "/abs/tmp"
    assert cfg.folder.archive == str(isolated / "data" / "arch")


def test_cascade_order(tmp_path, monkeypatch):
    make_project(tmp_path, monkeypatch,
                 "a: 1\nb: 1\nc: 1\nDEFAULT:\n  mongo_database: mypro\n")
    path = local(tmp_path, "job:\n  attempts: 2\n  priority: 2\n"
                           "mypro:\n  b: 2\n  c: 2\n")
    environ = {"CORE4_OPTION_mypro__c": "3",
               "CORE4_OPTION_job__priority": "3"}
    cfg = load_config("mypro", local_file=path, environ=environ)
    assert (cfg.mypro.a, cfg.mypro.b, cfg.mypro.c) == (1, 2, 3)
    assert (cfg.job.attempts, cfg.job.priority, cfg.job.defer_time) == (
        2, 3, 300)
    assert cfg.mypro.DEFAULT.mongo_database == "mypro"


def test_project_yaml_only_for_core4_projects(tmp_path, monkeypatch):
    make_project(tmp_path, monkeypatch, "a: 1\n", name="quoted",
                 marker="__project__ = 'core4'\n")
    make_project(tmp_path, monkeypatch, "a: 1\n", name="plain", marker="")
    assert load_config("quoted", environ={}).quoted.a == 1
    assert "plain" not in load_config("plain", environ={})
    assert "quoted" not in load_config(environ={})
    assert "nothere" not in load_config("nothere", environ={})
    assert load_config("core4", environ={}) == load_config(environ={})


def test_project_yaml_errors_name_file(tmp_path, monkeypatch):
    pro = make_project(tmp_path, monkeypatch, "a: [1\n")
    with pytest.raises(Core4ConfigurationError) as exc:
        load_config("mypro", environ={})
    assert str(pro / "mypro.yaml") in str(exc.value)


def test_core4_config_selects_file(tmp_path, isolated):
    write(isolated / ".core4" / "local.yaml", "job:\n  attempts: 7\n")
    path = local(tmp_path, "job:\n  attempts: 5\n")
    cfg = load_config(environ={"CORE4_CONFIG": path})
    assert cfg.job.attempts == 5
    other = write(tmp_path / "other.yaml", "job:\n  attempts: 6\n")
    cfg = load_config(local_file=other, environ={"CORE4_CONFIG": path})
    assert cfg.job.attempts == 6


def test_core4_config_missing_file(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(Core4ConfigurationError) as exc:
        load_config(environ={"CORE4_CONFIG": missing})
    assert str(exc.value) == (
        "CORE4_CONFIG=%s: configuration file not found" % missing)
    with pytest.raises(Core4ConfigurationError, match="missing.yaml"):
        load_config(local_file=missing, environ={})


def test_core4_config_from_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE4_CONFIG",
                       local(tmp_path, "job:\n  attempts: 4\n"))
    monkeypatch.setenv("CORE4_OPTION_job__priority", "9")
    cfg = load_config()
    assert (cfg.job.attempts, cfg.job.priority) == (4, 9)


def test_home_then_etc_fallback(tmp_path, isolated):
    write(tmp_path / "etc" / "local.yaml", "job:\n  attempts: 8\n")
    assert load_config(environ={}).job.attempts == 8
    write(isolated / ".core4" / "local.yaml", "job:\n  attempts: 9\n")
    assert load_config(environ={}).job.attempts == 9


@pytest.mark.parametrize("text, value", [
    ("!!int 5", 5),
    ("5", 5),
    ("!!float 1.5", 1.5),
    ("!!bool true", True),
    ("!!str 5", "5"),
    ("abc", "abc"),
    ("~", None),
    ("!!timestamp 2020-01-01 12:00", datetime.datetime(2020, 1, 1, 12, 0)),
    ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
    ("%(message)s", "%(message)s"),
])
def test_env_value_tags(text, value):
    got = load_config(environ={"CORE4_OPTION_mypro__value": text}).mypro.value
    assert got == value and type(got) is type(value)


def test_env_connect_and_schema_keys(isolated):
    environ = {
        "CORE4_OPTION_worker__max_cpu": "!!int 80",
        "CORE4_OPTION_DEFAULT__mongo_url": "mongodb://127.0.0.1:27017/",
        "CORE4_OPTION_folder__home": "/tmp/x",
        "CORE4_OPTION_sys__queue": "!connect mongodb://other/q",
        "CORE4_OPTION_worker__execution_plan__work_jobs": "1",
        "CORE4_OPTION_daemon__heartbeat": "2.5",
    }
    cfg = load_config(environ=environ)
    assert cfg.worker.max_cpu == 80
    assert cfg.folder.home == "/tmp/x"
    assert cfg.DEFAULT.mongo_url == "mongodb://127.0.0.1:27017/"
    assert cfg.sys.queue == Connect("mongodb://127.0.0.1:27017/", "other", "q")
    assert cfg.worker.execution_plan.work_jobs == 1
    assert cfg.daemon.heartbeat == 2.5


@pytest.mark.parametrize("name, text, match", [
    ("job__attempts", "three",
     "environment variable CORE4_OPTION_job__attempts: job.attempts must "
     "be int, got str 'three'"),
    ("job__force", "1", "job.force must be bool, got int 1"),
    ("job__attempts", "true", "job.attempts must be int, got bool True"),
    ("job__attempts", "!!int abc", "CORE4_OPTION_job__attempts"),
    ("job__nope", "1", "CORE4_OPTION_job__nope: unknown key job.nope"),
    ("job__", "1", "CORE4_OPTION_job__: empty key"),
    ("sys__queue", "!connect mongodb://a/b/c/d", "CORE4_OPTION_sys__queue"),
    ("job", "5", "job must be dict, got int 5"),
])
def test_env_errors(name, text, match):
    with pytest.raises(Core4ConfigurationError) as exc:
        load_config(environ={"CORE4_OPTION_" + name: text})
    assert match in str(exc.value)
    assert "\n" not in str(exc.value)


def test_type_mismatch_names_file_key_type(tmp_path):
    path = local(tmp_path, "job:\n  attempts: three\n")
    with pytest.raises(Core4ConfigurationError) as exc:
        load_config(local_file=path, environ={})
    assert str(exc.value) == (
        "%s: job.attempts must be int, got str 'three'" % path)


@pytest.mark.parametrize("text, match", [
    ("job:\n  foo: 1\n", "unknown key job.foo"),
    ("worker:\n  execution_plan:\n    foo: 1\n",
     "unknown key worker.execution_plan.foo"),
    ("DEFAULT:\n  foo: 1\n", "unknown key DEFAULT.foo"),
    ("worker:\n  execution_plan: 1\n",
     "worker.execution_plan must be dict, got int 1"),
    ("sys:\n  queue: sys_queue\n", "sys.queue must be !connect, got str"),
    ("logging:\n  stderr: 10\n", "logging.stderr must be str, got int 10"),
    ("mypro: 5\n", "unknown top-level key mypro must be a mapping"),
    ("_hidden: {}\n", "_hidden must not start with '_'"),
    ("a: [1\n", "invalid YAML"),
    ("- 1\n- 2\n", "top level must be a mapping"),
    ("sys:\n  queue: !connect mongodb://a/b/c/d\n", "!connect"),
    ("sys:\n  queue: !connect http://x\n", "must start with mongodb://"),
    ("sys:\n  queue: !connect mongodb://db//c\n", "!connect"),
])
def test_file_errors_name_file(tmp_path, text, match):
    path = local(tmp_path, text)
    with pytest.raises(Core4ConfigurationError) as exc:
        load_config(local_file=path, environ={})
    assert str(exc.value).startswith(path + ": ")
    assert match in str(exc.value)
    assert "\n" not in str(exc.value)


def test_schema_accepts_none_numbers_and_default_keys(tmp_path):
    path = local(tmp_path, "job:\n  attempts: ~\n  wall_time: 10\n"
                           "  defer_time: 1.5\n  mongo_database: jobs\n"
                           "worker:\n  execution_plan:\n    work_jobs: 2\n"
                           "daemon:\nmypro:\n")
    cfg = load_config(local_file=path, environ={})
    assert cfg.job.attempts is None
    assert cfg.job.wall_time == 10
    assert cfg.job.defer_time == 1.5
    assert cfg.job.mongo_database == "jobs"
    assert cfg.worker.execution_plan.work_jobs == 2
    assert cfg.daemon.heartbeat == 5
    assert "mypro" not in cfg
    empty = load_config(local_file=local(tmp_path, "# no\n"), environ={})
    assert empty.job.attempts == 1


def test_global_default_reaches_every_dict(tmp_path):
    path = local(tmp_path, "DEFAULT:\n  mongo_url: mongodb://h:1/\n"
                           "mypro:\n  sub:\n    deep: {}\n"
                           "  own:\n    mongo_url: mongodb://own:2/\n")
    cfg = load_config(local_file=path, environ={})
    assert cfg.DEFAULT.mongo_url == "mongodb://h:1/"
    assert cfg.job.mongo_url == "mongodb://h:1/"
    assert cfg.worker.execution_plan.mongo_url == "mongodb://h:1/"
    assert cfg.mypro.sub.deep.mongo_url == "mongodb://h:1/"
    assert cfg.mypro.sub.deep.mongo_database == "core4"
    assert cfg.mypro.own.mongo_url == "mongodb://own:2/"


def test_project_default_only_in_project(tmp_path, monkeypatch):
    make_project(tmp_path, monkeypatch,
                 "DEFAULT:\n  mongo_database: mypro\nsub:\n  x: 1\n")
    path = local(tmp_path, "other:\n  sub:\n    x: 1\n")
    environ = {"CORE4_OPTION_DEFAULT__mongo_url": "mongodb://g:1/",
               "CORE4_OPTION_DEFAULT__mongo_database": "glob"}
    cfg = load_config("mypro", local_file=path, environ=environ)
    assert cfg.mypro.mongo_database == "mypro"
    assert cfg.mypro.sub.mongo_database == "mypro"
    assert cfg.mypro.sub.mongo_url == "mongodb://g:1/"
    assert cfg.mypro.DEFAULT.mongo_url == "mongodb://g:1/"
    assert cfg.other.sub.mongo_database == "glob"
    assert cfg.job.mongo_database == "glob"
    assert cfg.DEFAULT.mongo_database == "glob"


def test_project_default_from_local_yaml_wins(tmp_path, monkeypatch):
    make_project(tmp_path, monkeypatch, "DEFAULT:\n  mongo_database: a\n"
                                        "sub: {}\n")
    path = local(tmp_path, "mypro:\n  DEFAULT:\n    mongo_database: b\n")
    cfg = load_config("mypro", local_file=path, environ={})
    assert cfg.mypro.sub.mongo_database == "b"


def test_connect_slashes_and_inheritance(tmp_path):
    path = local(tmp_path, (
        "DEFAULT:\n  mongo_url: mongodb://base:1/\n"
        "mypro:\n"
        "  a: !connect mongodb://coll\n"
        "  b: !connect mongodb://db/coll\n"
        "  c: !connect mongodb://host:1234/db/coll\n"
        "  d: !connect mongodb://u:p@host/db/coll\n"
        "  e: [!connect mongodb://listed]\n"))
    cfg = load_config(local_file=path, environ={})
    assert cfg.mypro.a == Connect("mongodb://base:1/", "core4", "coll")
    assert cfg.mypro.b == Connect("mongodb://base:1/", "db", "coll")
    assert cfg.mypro.c == Connect("mongodb://host:1234/", "db", "coll")
    assert cfg.mypro.d == Connect("mongodb://u:p@host:27017/", "db", "coll")
    assert cfg.mypro.e == (Connect("mongodb://base:1/", "core4", "listed"),)
    assert cfg.sys.queue.url == "mongodb://base:1/"


def test_connect_project_default_database(tmp_path, monkeypatch):
    make_project(tmp_path, monkeypatch,
                 "DEFAULT:\n  mongo_database: mypro\n"
                 "data: !connect mongodb://coll\n"
                 "sub:\n  data: !connect mongodb://coll2\n")
    cfg = load_config("mypro", environ={})
    assert cfg.mypro.data == Connect(None, "mypro", "coll")
    assert cfg.mypro.sub.data == Connect(None, "mypro", "coll2")
    assert cfg.sys.queue == Connect(None, "core4", "sys_queue")


def test_connect_without_database_fails(tmp_path):
    path = local(tmp_path, "DEFAULT:\n  mongo_database: ~\n")
    with pytest.raises(Core4ConfigurationError, match="sys.queue"):
        load_config(local_file=path, environ={})


def test_connect_object():
    one = Connect.parse("mongodb://db/coll")
    assert (one.url, one.database, one.collection) == (None, "db", "coll")
    assert one == Connect(None, "db", "coll")
    assert one != Connect(None, "x", "coll")
    assert hash(one) == hash(Connect(None, "db", "coll"))
    assert repr(one) == "Connect(url=None, database='db', collection='coll')"
    assert one.resolve("mongodb://u/", "x") == Connect(
        "mongodb://u/", "db", "coll")
    with pytest.raises(Core4ConfigurationError):
        one.url = "mongodb://x/"
    assert pickle.loads(pickle.dumps(one)) == one


def test_configmap_is_read_only_mapping(tmp_path):
    path = local(tmp_path, "mypro:\n  items: [1, {a: 2}]\n  sub: {x: 1}\n")
    cfg = load_config(local_file=path, environ={})
    assert isinstance(cfg, Mapping) and isinstance(cfg.mypro.sub, ConfigMap)
    assert cfg["job"]["attempts"] == cfg.job.attempts == 1
    assert cfg.mypro["items"] == (1, ConfigMap({"a": 2}))
    assert cfg.get("nothing", 3) == 3 and "job" in cfg and "x" not in cfg
    assert len(cfg) == len(list(cfg)) and "sys" in list(cfg)
    for action in (lambda: setattr(cfg, "job", 1),
                   lambda: cfg.__setitem__("job", 1),
                   lambda: cfg.__delitem__("job"),
                   lambda: delattr(cfg, "job"),
                   lambda: setattr(cfg.mypro.sub, "x", 2)):
        with pytest.raises(Core4ConfigurationError, match="read-only"):
            action()
    with pytest.raises(AttributeError, match="nothing"):
        cfg.job.nothing
    plain = cfg.to_dict()
    assert type(plain["mypro"]["sub"]) is dict
    assert plain["mypro"]["items"] == [1, {"a": 2}]
    plain["job"]["attempts"] = 5
    assert cfg.job.attempts == 1
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_class_config(tmp_path):
    path = local(tmp_path, (
        "mypro:\n  myjob:\n    MyJob:\n      attempts: 3\n"
        "core4:\n  queue:\n    helper:\n      job:\n        example:\n"
        "          DummyJob:\n            priority: 4\n"))
    cfg = load_config(local_file=path, environ={})
    own = class_config(cfg, "mypro.myjob.MyJob")
    assert isinstance(own, ConfigMap) and own.attempts == 3
    assert class_config(
        cfg, "core4.queue.helper.job.example.DummyJob").priority == 4
    assert class_config(cfg, "mypro.myjob.Other") is None
    assert class_config(cfg, "nopro.myjob.MyJob") is None
    assert class_config(cfg, "mypro.myjob.MyJob.attempts") is None


def test_get_config_cache_and_reset(tmp_path, monkeypatch):
    path = local(tmp_path, "job:\n  attempts: 2\n")
    monkeypatch.setenv("CORE4_CONFIG", path)
    first = get_config()
    assert first.job.attempts == 2 and get_config() is first
    assert get_config("other") is not first
    with monkeypatch.context() as patch:
        patch.setattr(core4.config.os, "getpid", lambda: -1)
        assert get_config() is not first
    assert get_config() is first
    write(tmp_path / "local.yaml", "job:\n  attempts: 3\n")
    assert get_config().job.attempts == 2
    reset_config()
    again = get_config()
    assert again is not first and again.job.attempts == 3
