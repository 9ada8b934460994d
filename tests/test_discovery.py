"""Projects in the current environment are found (issue 19, item 7): a
core4 project importable by the Python that runs ``coco`` (here: on
``PYTHONPATH``) is listed by ``coco --jobs`` and scheduled by a real
``coco --scheduler``; a project in the core4 home of the same name wins;
``coco --jobs`` lists no module of core4 that defines no job."""

import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from core4.api.discover import route_rows
from core4.config import get_config
from core4.queue.registry import collect_all
from tests.support import ROOT, wait_for, worker_env

INIT = '__project__ = "core4"\n__version__ = "0.0.7"\n'

JOBS = '''
from core4.queue.job import CoreJob


class {name}(CoreJob):
    """A job of the {where}."""
    author = "test"
    schedule = "{schedule}"

    def execute(self, **kwargs):
        print("ticked")
'''


def make_package(base, project, name, where, schedule="0 0 1 1 *"):
    """Write ``base/project`` with one job class ``name`` in ``jobs.py``."""
    package = base / project
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(INIT)
    (package / "jobs.py").write_text(JOBS.format(
        name=name, where=where, schedule=schedule))
    return package


@pytest.fixture
def env_path(tmp_path, monkeypatch):
    """A directory on PYTHONPATH (in this process and its children)."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(path), ROOT, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(path))
    return path


def coco(*args, env=None):
    return subprocess.run([sys.executable, "-m", "core4.script.coco", *args],
                          capture_output=True, text=True, cwd=ROOT,
                          env=env or os.environ, timeout=120)


def test_coco_jobs_lists_a_project_on_pythonpath(core4_env, env_path):
    make_package(env_path, "envpro", "EnvJob", "environment")
    done = coco("--jobs")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["envpro", "envpro.jobs.EnvJob", "yes", "0", "0", "1", "1", "*",
            "test"] in rows, done.stdout


def test_coco_jobs_lists_only_core4_job_modules(core4_env, tmp_path):
    """core4's own modules that define no job are not introspected (here
    docutils, which the API's documentation module imports, is broken)."""
    fake = tmp_path / "fake"
    (fake / "docutils").mkdir(parents=True)
    (fake / "docutils" / "__init__.py").write_text(
        "raise ImportError('docutils is missing')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), ROOT]))
    done = coco("--jobs", env=env)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[1] for line in done.stdout.splitlines()[2:]
              if line.startswith("core4 ")]
    assert {"core4.queue.helper.job.example.DummyJob",
            "core4.queue.helper.job.example.NoopJob"} <= set(listed)
    assert all(name.startswith("core4.queue.helper.job.")
               for name in listed), done.stdout
    assert "apidoc" not in done.stdout and "NO" not in done.stdout


API = '''
from core4.api import CoreApiContainer, CoreRequestHandler


class HelloHandler(CoreRequestHandler):
    """Say hello."""

    def get(self):
        self.reply("hello")


class HelloApi(CoreApiContainer):
    rules = [("/hello", HelloHandler)]
'''


def _fake_home_project(home, name, job):
    """A project ``name`` in the core4 home whose ``.venv/bin/python`` is
    this Python with the project's source on its path (no venv built)."""
    root = home / name
    make_package(root, name, job, "home")
    (root / name / "api.py").write_text(API)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(textwrap.dedent("""\
        #!/bin/sh
        PYTHONPATH="{root}:{repo}" exec "{python}" "$@"
        """).format(root=root, repo=ROOT, python=sys.executable))
    python.chmod(0o755)


def test_the_home_wins_over_the_environment(core4_env, env_path, caplog):
    _fake_home_project(pathlib.Path(core4_env.home), "dupro", "HomeJob")
    make_package(env_path, "dupro", "EnvJob", "environment")
    caplog.set_level(logging.INFO, logger="core4")
    names = [entry["name"] for entry in collect_all(get_config())
             if entry["project"] == "dupro"]
    assert names == ["dupro.jobs.HomeJob"]
    said = [r.getMessage() for r in caplog.records
            if "dupro" in r.getMessage()]
    assert len(said) == 1 and "the home's is used" in said[0], said


def test_scheduler_enqueues_a_project_on_pythonpath(core4_env, env_path, db,
                                                    tmp_path):
    make_package(env_path, "tickpro", "TickJob", "environment",
                 schedule="* * * * * */2")
    env = worker_env(CORE4_OPTION_scheduler__interval="!!float 0.2",
                     CORE4_OPTION_scheduler__lease="!!float 2")
    log_path = tmp_path / "scheduler.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core4.script.coco", "--scheduler",
             "envsched"], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, start_new_session=True)
    try:
        wait_for(lambda: db.sys_queue.find_one(
            {"name": "tickpro.jobs.TickJob"}), 60,
            message="tickpro.jobs.TickJob enqueued:\n%s" % (
                log_path.read_text()))
        entry = db.sys_job.find_one({"_id": "tickpro.jobs.TickJob"})
        assert entry and entry["valid"] and entry["project"] == "tickpro"
    finally:
        proc.kill()
        proc.wait(10)


def test_routes_of_the_containers_served(core4_env):
    """What replaces upstream's ``coco --container``: the routes of core4's
    containers and of a project's in the home (asked in its .venv)."""
    _fake_home_project(pathlib.Path(core4_env.home), "hellopro", "HelloJob")
    rows = route_rows(get_config())
    assert {"container": "hellopro.api.HelloApi", "enabled": True,
            "route": "/hellopro/hello",
            "handler": "hellopro.api.HelloHandler"} in rows, rows
    assert any(row["route"] == "/core4/api/v1/roles" for row in rows)
