"""Projects: coco --init, coco --home, coco --jobs, broken environments."""

import os
import re
import shutil

import pytest
import yaml
from bson import ObjectId

from core4.queue.queue import CoreQueue
from tests.projects.conftest import (
    run, coco, ok, user_error, wait_final, complete, clean_env, DUMMY)
from tests.support import ROOT

pytestmark = pytest.mark.timeout(900)


# 1. coco --init ------------------------------------------------------------

def git(root, *args):
    return ok(run(["git", *args], cwd=root)).strip()


def test_init_creates_the_project(space, mypro):
    root = mypro.root
    created = mypro.created
    for name, text in created.items():
        assert text is not None, "%s not created" % name
    assert os.path.isdir(os.path.join(root, "tests"))
    assert "My project" in created["README.md"]
    assert re.search(r'^__project__ = "core4"$', created["mypro/__init__.py"],
                     re.M), created["mypro/__init__.py"]
    assert re.search(r"^\s*mongo_database: mypro\s*$",
                     created["mypro/mypro.yaml"], re.M), \
        created["mypro/mypro.yaml"]
    assert 'name = "mypro"' in created["pyproject.toml"]
    assert os.access(os.path.join(root, "enter_env"), os.X_OK)

    # a new project starts at 0.0.1 (its first coco --build makes 0.0.2)
    assert re.search(r'^__version__ = "0\.0\.1"$',
                     created["mypro/__init__.py"], re.M)

    # git: master and develop, origin the bare repository .repos itself
    branches = git(root, "for-each-ref", "--format=%(refname:short)",
                   "refs/heads").split()
    assert sorted(branches) == ["develop", "master"]
    origin = git(root, "remote", "get-url", "origin")
    assert os.path.realpath(origin) == os.path.realpath(
        os.path.join(root, ".repos")), origin
    assert git(origin, "rev-parse", "--is-bare-repository") == "true"
    remote_heads = git(root, "ls-remote", "--heads", "origin")
    assert "refs/heads/master" in remote_heads
    assert "refs/heads/develop" in remote_heads
    assert git(root, "ls-files", "README.md") == "README.md"

    # the venv has core4 (installed there, not the source tree) and mypro
    proc = run([mypro.python, "-c",
                "import core4, mypro; print(core4.__file__); "
                "print(mypro.__file__)"], cwd=space.neutral)
    core4_file, mypro_file = ok(proc).split()
    venv = os.path.realpath(os.path.join(root, ".venv"))
    assert os.path.realpath(core4_file).startswith(venv + os.sep)
    assert os.path.realpath(mypro_file) == os.path.realpath(
        os.path.join(root, "mypro", "__init__.py"))  # editable

    # <home>/mypro links to the project
    link = os.path.join(space.home, "mypro")
    assert os.path.islink(link)
    assert os.path.realpath(link) == os.path.realpath(root)

    # the first init wrote ~/.core4/local.yaml: where mongo_url (here the
    # configured one, uncommented), logging and folder.home go
    assert "create   %s" % mypro.local_yaml in mypro.init.stdout
    local = yaml.safe_load(mypro.local_yaml_text)
    assert local == {"DEFAULT": {"mongo_url": space.url,
                                 "mongo_database": local["DEFAULT"][
                                     "mongo_database"]}}, local
    for setting in ("# logging:", "#   mongodb: INFO", "# folder:",
                    "#   home: %s" % space.home):
        assert setting in mypro.local_yaml_text, mypro.local_yaml_text
    assert os.stat(mypro.local_yaml).st_mode & 0o077 == 0


def test_home_lists_the_project(space, mypro):
    out = ok(coco(space, "--home"))
    rows = [line.split() for line in out.splitlines()
            if line.split() and line.split()[0] == "mypro"]
    assert len(rows) == 1, out
    row = rows[0]
    assert row[1] == "0.0.1", out
    assert os.path.join(space.home, "mypro", ".venv", "bin",
                        "python") in row, out


def test_init_again_never_overwrites(space, mypro, pip_env):
    root = mypro.root
    readme = os.path.join(root, "README.md")
    with open(readme, "w") as handle:
        handle.write("# mine\n\nkeep me\n")
    before = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", ".repos",
                                                 "__pycache__")
                   and not d.endswith(".egg-info")]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                before[path] = handle.read()
    proc = coco(space, "--init", "mypro", "Another description", "--yes",
                env=mypro.init_env, cwd=os.path.dirname(root), timeout=900)
    ok(proc)
    # it says so up front, before it does anything
    lines = proc.stdout.splitlines()
    assert lines[1] == ("project mypro exists in %s: missing files are "
                        "added, existing ones kept, its .venv is updated"
                        % root), lines[:3]
    # ~/.core4/local.yaml exists: kept as it is
    assert "local.yaml" not in proc.stdout
    with open(mypro.local_yaml) as handle:
        assert handle.read() == mypro.local_yaml_text
    with open(readme) as handle:
        assert handle.read() == "# mine\n\nkeep me\n"
    assert re.search(r"keep\s+\S*README\.md", proc.stdout), proc.stdout
    for path, data in before.items():
        with open(path, "rb") as handle:
            assert handle.read() == data, "%s was overwritten" % path
    # still one project, still working
    ok(run([mypro.python, "-c", "import core4, mypro"], cwd=space.neutral))
    assert os.path.realpath(os.path.join(space.home, "mypro")) == \
        os.path.realpath(root)


@pytest.mark.parametrize("name", ["My-Pro", "class", "mongo", "core4"])
def test_init_invalid_name(space, tmp_path, name):
    before = sorted(os.listdir(space.home))
    proc = coco(space, "--init", name, "x", "--yes", cwd=str(tmp_path),
                timeout=60)
    line = user_error(proc)
    assert name in line, line
    assert os.listdir(str(tmp_path)) == []
    assert sorted(os.listdir(space.home)) == before


# 3. the job registry ---------------------------------------------------------

def test_jobs_lists_and_introspects(space, mypro, db):
    def rows(out):
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                found[parts[1]] = line
        return found

    out = ok(coco(space, "--jobs"))
    listed = rows(out)
    assert "mypro.myjob.MyJob" in listed, out
    assert listed["mypro.myjob.MyJob"].split()[2] == "yes", out
    assert "mypro.myjob.WaitJob" in listed, out
    bad = listed.get("mypro.noauthor.NoAuthorJob")
    assert bad is not None, out
    assert bad.split()[2] == "NO", out
    assert "author" in bad, out
    assert db.sys_job.count_documents({}) == 0  # not registered

    out = ok(coco(space, "--jobs", "--introspect"))
    good = db.sys_job.find_one({"_id": "mypro.myjob.MyJob"})
    assert good is not None, out
    assert good["valid"] is True and good["exception"] is None
    assert good["project"] == "mypro" and good["author"] == "test"
    bad = db.sys_job.find_one({"_id": "mypro.noauthor.NoAuthorJob"})
    assert bad is not None, out
    assert bad["valid"] is False
    assert "author" in bad["exception"], bad
    # core4's own jobs are there too
    assert db.sys_job.find_one({"project": "core4", "valid": True})


DIRECT = '''
import core4.queue.job


class DirectJob(core4.queue.job.CoreJob):
    author = "test"

    def execute(self, **kwargs):
        print("DIRECT-RAN")


if __name__ == "__main__":
    from core4.queue.helper.functool import execute
    doc = execute(DirectJob)
    print("NAME=%s STATE=%s" % (doc["name"], doc["state"]))
'''


def test_job_module_run_directly_is_named_by_its_project(space, mypro, db):
    """``python mypro/direct.py`` in the project (as after ``source
    enter_env``) names the job ``mypro.direct.DirectJob``."""
    path = os.path.join(mypro.root, "mypro", "direct.py")
    with open(path, "w") as handle:
        handle.write(DIRECT)
    try:
        out = ok(run([mypro.python, "mypro/direct.py"], cwd=mypro.root))
    finally:
        os.remove(path)
    assert "NAME=mypro.direct.DirectJob STATE=complete" in out, out


def test_jobs_of_a_plain_install_lists_job_modules_only(space, mypro):
    """mypro's venv is a plain install (no docutils, which the API docs
    module core4.api.v1.apidoc needs): coco --jobs there lists no broken
    core4 module."""
    proc = run([mypro.python, "-c", "import docutils"], cwd=space.neutral)
    assert "No module named 'docutils'" in proc.stderr, proc.stderr
    out = ok(run([mypro.python, "-m", "core4.script.coco", "--jobs"],
                 cwd=space.neutral))
    assert "core4.api" not in out and "docutils" not in out, out
    invalid = [line.split()[1] for line in out.splitlines()[2:]
               if line.split()[2:3] == ["NO"]]
    assert invalid == ["mypro.noauthor.NoAuthorJob"], out


def test_core4_source_from_the_project_env(space, mypro):
    """coco --init in a project's environment (core4 installed there, not
    editable) installs core4 from where that came from: no CORE4_SOURCE."""
    env = clean_env()
    env.pop("CORE4_SOURCE", None)
    out = ok(run([mypro.python, "-c", "import core4, os; "
                  "from core4.project.create import core4_source; "
                  "print(os.path.dirname(core4.__file__)); "
                  "print(core4_source())"], cwd=space.neutral, env=env))
    installed, source = out.split()
    assert not installed.startswith(ROOT + os.sep), installed
    assert os.path.realpath(source) == os.path.realpath(ROOT), out


# 4. a broken project environment -------------------------------------------

@pytest.fixture
def broken_projects(space):
    """``<home>/broken``: .venv/bin/python exits 1; ``<home>/dangling``:
    .venv is a dangling symlink. Removed afterwards."""
    broken = os.path.join(space.home, "broken")
    os.makedirs(os.path.join(broken, ".venv", "bin"))
    python = os.path.join(broken, ".venv", "bin", "python")
    with open(python, "w") as handle:
        handle.write("#!/bin/sh\necho 'this python is broken' >&2\nexit 1\n")
    os.chmod(python, 0o755)
    dangling = os.path.join(space.home, "dangling")
    os.makedirs(dangling)
    os.symlink(os.path.join(dangling, ".venvs", "gone"),
               os.path.join(dangling, ".venv"))
    yield {"broken": python,
           "dangling": os.path.join(dangling, ".venv", "bin", "python")}
    shutil.rmtree(broken, ignore_errors=True)
    shutil.rmtree(dangling, ignore_errors=True)


def test_broken_project_env_fails_only_its_jobs(space, db, broken_projects,
                                                start_worker):
    queue = CoreQueue()
    template = db.sys_queue.find_one(
        {"_id": queue.enqueue(DUMMY, sleep=0.3, marker="template")._id})
    ids = {}
    for project in ("broken", "dangling"):
        doc = dict(template, _id=ObjectId(), name="%s.jobs.X" % project,
                   project=project)
        db.sys_queue.insert_one(doc)
        ids[project] = doc["_id"]
    db.sys_queue.delete_one({"_id": template["_id"]})
    dummy = queue.enqueue(DUMMY, sleep=0.3)._id

    worker = start_worker()
    for project, _id in ids.items():
        doc = wait_final(db, _id, worker=worker)
        assert doc["state"] == "error", (project, doc["state"],
                                         doc.get("last_error"))
        message = doc["last_error"]["exception"]
        assert broken_projects[project] in message, (project, message)
    complete(db, dummy, worker)
    assert worker.proc.poll() is None, worker.output()[-3000:]


def test_broken_project_env_with_a_big_job_document(space, db,
                                                   broken_projects,
                                                   start_worker):
    """Same as above, but the job document is bigger than a pipe buffer:
    sending it to the broken launcher fails with a broken pipe, which must
    still end in ``error`` naming the broken python."""
    queue = CoreQueue()
    template = db.sys_queue.find_one(
        {"_id": queue.enqueue(DUMMY, sleep=0.3, big="x" * 200000)._id})
    doc = dict(template, _id=ObjectId(), name="broken.jobs.Big",
               project="broken")
    db.sys_queue.insert_one(doc)
    db.sys_queue.delete_one({"_id": template["_id"]})
    worker = start_worker()
    after = wait_final(db, doc["_id"], worker=worker)
    assert after["state"] == "error", (after["state"],
                                       after.get("last_error"))
    assert broken_projects["broken"] in after["last_error"]["exception"], \
        after["last_error"]
