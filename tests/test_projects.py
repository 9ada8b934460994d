"""End-to-end tests of project environments.

A project created with ``coco --init`` (``mypro``) and one installed with
``croll.py`` (``second``) live in a core4 home shared by this module; their
jobs are enqueued from core4's own environment (where they cannot be
imported) and run by real workers with the project's ``.venv`` python.

Speed: the two project venvs are built once per module, from a wheelhouse
built once per module (``pip`` runs with ``PIP_NO_INDEX``: no network).
Each test gets a fresh database; the home (and the projects in it) is shared.

The worker, ``coco`` and project subprocesses run without ``PYTHONPATH``:
core4 is installed in /work/main/.venv, and a project job must import the
core4 and the packages of its own venv, not a source tree leaking in.
"""

import itertools
import os
import re
import shutil
import subprocess
import sys
import textwrap

import psutil
import pymongo
import pytest
from bson import ObjectId

from core4.config import reset_config
from core4.queue.queue import CoreQueue
from tests.support import FAST, ROOT, WorkerProcess, wait_for

pytestmark = pytest.mark.timeout(900)

DUMMY = "core4.queue.helper.job.DummyJob"
CROLL = os.path.join(ROOT, "croll.py")
OID = re.compile(r"\b[0-9a-f]{24}\b")
_COUNTER = itertools.count()


# environment ---------------------------------------------------------------

class Space:
    """The module's core4 home, database server and scratch folders."""

    def __init__(self, base, url, home, neutral):
        self.base = base
        self.url = url
        self.home = home
        self.neutral = neutral     # an empty cwd: nothing importable there


def clean_env(**extra):
    """This process' environment (the module's CORE4_OPTION_* included)
    without PYTHONPATH / VIRTUAL_ENV, plus ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def tail(text, lines=15):
    return "\n".join((text or "").splitlines()[-lines:])


@pytest.fixture(scope="module")
def space(servers, tmp_path_factory):
    """Module-wide: the session's NX server, a core4 home and a database,
    published through CORE4_OPTION_* variables (subprocesses inherit)."""
    base = tmp_path_factory.mktemp("projects")
    home = base / "home"
    home.mkdir()
    neutral = base / "neutral"
    neutral.mkdir()
    local = base / "local.yaml"
    local.write_text("{}\n")
    url = servers.url("nx")
    database = "tproj%d_module" % os.getpid()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORE4_OPTION_DEFAULT__mongo_url", url)
        mp.setenv("CORE4_OPTION_DEFAULT__mongo_database", database)
        mp.setenv("CORE4_OPTION_folder__home", str(home))
        mp.setenv("CORE4_CONFIG", str(local))
        reset_config()
        yield Space(base, url, str(home), str(neutral))
    _drop(url, database)
    reset_config()


def _drop(url, database):
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        client.drop_database(database)
    except pymongo.errors.PyMongoError:
        pass
    client.close()


@pytest.fixture
def db(space, monkeypatch):
    """A fresh database for this test (the home stays the module's)."""
    database = "tproj%d_%d" % (os.getpid(), next(_COUNTER))
    monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_database", database)
    reset_config()
    client = pymongo.MongoClient(space.url)
    yield client[database]
    client.close()
    _drop(space.url, database)
    reset_config()


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """Wheels of core4, its dependencies and the build backend."""
    path = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(path), ROOT,
         "setuptools>=64", "wheel"], capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, tail(proc.stderr)
    return str(path)


@pytest.fixture(scope="module")
def pip_env(space, wheelhouse):
    """Environment for anything that runs pip: the wheelhouse, no index."""
    return clean_env(PIP_FIND_LINKS=wheelhouse, PIP_NO_INDEX="1",
                     PIP_DISABLE_PIP_VERSION_CHECK="1")


def run(cmd, cwd, env=None, timeout=120):
    return subprocess.run(cmd, cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def coco(space, *args, env=None, cwd=None, timeout=120):
    """``coco ARGS`` with core4's python (/work/main/.venv)."""
    return run([sys.executable, "-m", "core4.script.coco", *args],
               cwd=cwd or space.neutral, env=env, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, (proc.args, proc.returncode,
                                  tail(proc.stdout), tail(proc.stderr))
    assert "Traceback" not in proc.stdout + proc.stderr, tail(proc.stderr)
    return proc.stdout


def user_error(proc):
    """Assert exit 2 with one line on stderr and no traceback; return the
    line."""
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, tail(output)
    assert proc.returncode == 2, (proc.args, proc.returncode, tail(output))
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), (proc.args, proc.stderr)
    return lines[0]


def enqueue(space, name, *args):
    """``coco --enqueue NAME ARGS`` from core4's environment; the new id."""
    out = ok(coco(space, "--enqueue", name, *args))
    found = OID.findall(out)
    assert len(found) == 1, out
    return ObjectId(found[0])


# the project mypro (coco --init) -----------------------------------------

MYJOB = '''
"""Jobs of mypro; onlyhere is installed only in mypro's .venv."""

import os
import sys
import time

import onlyhere
from core4.queue.job import CoreJob

TEXT = "{text}"


def report():
    import core4
    print("EXECUTABLE=%s" % sys.executable)
    print("PREFIX=%s" % sys.prefix)
    print("CORE4=%s" % core4.__file__)
    print("ONLYHERE=%s" % onlyhere.VALUE)
    print("LAUNCHER=%d" % os.getppid())


class MyJob(CoreJob):
    """Print where it runs."""
    author = "test"

    def execute(self, n=0, **kwargs):
        print("%s n=%s" % (TEXT, n))
        report()


class WaitJob(CoreJob):
    """Wait until the file ``flag`` exists."""
    author = "test"

    def execute(self, flag=None, **kwargs):
        print("WAIT-START pid=%d" % os.getpid(), flush=True)
        deadline = time.time() + 120
        while not os.path.exists(flag) and time.time() < deadline:
            time.sleep(0.05)
        print("WAIT-DONE")
        report()
'''

NOAUTHOR = '''
from core4.queue.job import CoreJob


class NoAuthorJob(CoreJob):
    """A job without author."""

    def execute(self, **kwargs):
        pass
'''


def write_myjob(root, text):
    path = os.path.join(root, "mypro", "myjob.py")
    with open(path, "w") as handle:
        handle.write(MYJOB.format(text=text))


class Project:
    def __init__(self, root, init):
        self.root = root
        self.python = os.path.join(root, ".venv", "bin", "python")
        self.init = init


@pytest.fixture(scope="module")
def mypro(space, pip_env):
    """``coco --init mypro "My project" --yes``, then two job modules, and
    the package onlyhere installed into mypro's .venv only.

    mypro/__init__.py imports mypro.myjob, so the warm launcher (which
    preloads the project) holds the job's code: a code change must retire
    it."""
    work = os.path.join(str(space.base), "work")
    os.makedirs(work)
    init = coco(space, "--init", "mypro", "My project", "--yes",
                env=pip_env, cwd=work, timeout=900)
    ok(init)
    root = os.path.join(work, "mypro")
    project = Project(root, init)
    # snapshot what coco --init wrote (test_init_creates_the_project)
    project.created = {}
    for name in ("README.md", "enter_env", "pyproject.toml",
                 "requirements.txt", ".gitignore", "mypro/__init__.py",
                 "mypro/mypro.yaml", "tests/__init__.py"):
        path = os.path.join(root, name)
        project.created[name] = open(path).read() if os.path.exists(path) \
            else None
    write_myjob(root, "TEXT-ONE")
    with open(os.path.join(root, "mypro", "noauthor.py"), "w") as handle:
        handle.write(NOAUTHOR)
    with open(os.path.join(root, "mypro", "__init__.py"), "a") as handle:
        handle.write("\nfrom mypro import myjob  # noqa: preloaded\n")
    # onlyhere: a tiny local package installed into mypro's venv only
    src = os.path.join(str(space.base), "onlyhere-src")
    os.makedirs(os.path.join(src, "onlyhere"))
    with open(os.path.join(src, "pyproject.toml"), "w") as handle:
        handle.write(textwrap.dedent("""\
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "onlyhere"
            version = "1.0"
            """))
    with open(os.path.join(src, "onlyhere", "__init__.py"), "w") as handle:
        handle.write('VALUE = "onlyhere-42"\n')
    ok(run([project.python, "-m", "pip", "install", "-q", src], cwd=src,
           env=pip_env, timeout=600))
    return project


# workers -------------------------------------------------------------------

@pytest.fixture
def start_worker(db, tmp_path):
    """Start ``coco --worker NAME`` from core4's env (no PYTHONPATH);
    every worker started is stopped at the end of the test."""
    started = []

    def start(name="pw"):
        log_dir = tmp_path / ("log-%s-%d" % (name, next(_COUNTER)))
        log_dir.mkdir()
        env = clean_env(**FAST)
        worker = WorkerProcess(name, env=env, log_dir=str(log_dir))
        started.append(worker)
        try:
            worker.wait_registered(db, 30)
        except AssertionError:
            raise AssertionError("worker %s did not register; log:\n%s" % (
                name, worker.output()[-3000:]))
        return worker

    yield start
    for worker in started:
        worker.stop()


def find(db, _id):
    return db.sys_queue.find_one({"_id": _id}) or \
        db.sys_journal.find_one({"_id": _id})


def wait_state(db, _id, states, timeout=60, worker=None):
    """Wait until job ``_id`` is in one of ``states``; return its doc."""
    def reached():
        doc = find(db, _id)
        return doc if doc and doc["state"] in states else None
    try:
        return wait_for(reached, timeout, message="job %s to be %s" % (
            _id, "/".join(states)))
    except AssertionError as exc:
        doc = find(db, _id) or {}
        log = worker.output()[-3000:] if worker else ""
        raise AssertionError("%s; now %s, last_error %s\n%s" % (
            exc, doc.get("state"), doc.get("last_error"), log)) from None


def wait_final(db, _id, timeout=60, worker=None):
    """Wait until job ``_id`` ended (complete, error, killed, inactive) and,
    if complete, is journaled; return its doc."""
    def ended():
        doc = find(db, _id)
        if doc and doc["state"] in ("error", "killed", "inactive"):
            return doc
        return db.sys_journal.find_one({"_id": _id, "state": "complete"})
    try:
        return wait_for(ended, timeout, message="job %s to end" % _id)
    except AssertionError as exc:
        doc = find(db, _id) or {}
        log = worker.output()[-3000:] if worker else ""
        raise AssertionError("%s; now %s, last_error %s\n%s" % (
            exc, doc.get("state"), doc.get("last_error"), log)) from None


def complete(db, _id, worker):
    doc = wait_final(db, _id, worker=worker)
    assert doc["state"] == "complete", (doc.get("last_error"),
                                        worker.output()[-3000:])
    return doc


def output(db, _id):
    """The job's captured stdout as text (waits for it)."""
    doc = wait_for(lambda: db.sys_stdout.find_one({"_id": _id}), 10,
                   message="output of %s" % _id)
    out = doc["stdout"]
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else out


def reported(text):
    """KEY=VALUE lines of a job's output."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isupper():
            found[key] = value.strip()
    return found


def assert_ran_in(text, venv_link):
    """The job's output shows it ran with the python of ``venv_link``
    (``<home>/<project>/.venv``), not with core4's."""
    values = reported(text)
    assert values.get("EXECUTABLE") == os.path.join(venv_link, "bin",
                                                    "python"), text
    venv = os.path.realpath(venv_link)
    assert os.path.realpath(values["PREFIX"]) == venv, text
    assert not values["PREFIX"].startswith(os.path.join(ROOT, ".venv")), text


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

    # git: master and develop, origin a bare repository in .repos/
    branches = git(root, "for-each-ref", "--format=%(refname:short)",
                   "refs/heads").split()
    assert sorted(branches) == ["develop", "master"]
    origin = git(root, "remote", "get-url", "origin")
    assert os.path.realpath(origin).startswith(
        os.path.realpath(os.path.join(root, ".repos")) + os.sep), origin
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


def test_home_lists_the_project(space, mypro):
    out = ok(coco(space, "--home"))
    rows = [line.split() for line in out.splitlines()
            if line.split() and line.split()[0] == "mypro"]
    assert len(rows) == 1, out
    row = rows[0]
    assert row[1] == "0.0.0", out
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
                env=pip_env, cwd=os.path.dirname(root), timeout=900)
    ok(proc)
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


# 2. a project job, enqueued from core4's env, runs in the project's venv ----

def test_project_job_runs_in_its_venv(space, mypro, db, start_worker):
    # mypro and onlyhere cannot be imported in core4's environment
    for module in ("mypro", "onlyhere"):
        proc = run([sys.executable, "-c", "import %s" % module],
                   cwd=space.neutral)
        assert proc.returncode != 0
        assert "No module named %r" % module in proc.stderr, proc.stderr

    first = enqueue(space, "mypro.myjob.MyJob", "n=1")
    doc = db.sys_queue.find_one({"_id": first})
    assert doc["name"] == "mypro.myjob.MyJob" and doc["project"] == "mypro"
    worker = start_worker()
    complete(db, first, worker)
    text = output(db, first)
    assert "TEXT-ONE n=1" in text, text
    assert reported(text)["ONLYHERE"] == "onlyhere-42", text
    launcher = reported(text)["LAUNCHER"]
    assert_ran_in(text, os.path.join(space.home, "mypro", ".venv"))

    # change the code: the next job runs it, the worker keeps running
    write_myjob(mypro.root, "TEXT-TWO-CHANGED")
    second = enqueue(space, "mypro.myjob.MyJob", "n=2")
    complete(db, second, worker)
    text = output(db, second)
    assert "TEXT-TWO-CHANGED n=2" in text, text
    assert "TEXT-ONE" not in text, text
    # a fresh launcher: the warm one had imported the old code (preloaded)
    assert reported(text)["LAUNCHER"] != launcher, text
    assert_ran_in(text, os.path.join(space.home, "mypro", ".venv"))
    assert worker.proc.poll() is None, worker.output()[-3000:]
    assert db.sys_worker.find_one({"pid": worker.pid})["phase"] == "loop"


def test_project_job_imports_core4_of_its_venv(space, mypro, db,
                                               start_worker):
    """The job imports the core4 installed in mypro's venv, even though the
    worker runs in a folder holding a core4 package (WorkerProcess runs in
    the core4 source tree, as a developer's worker would)."""
    _id = enqueue(space, "mypro.myjob.MyJob", "n=3")
    worker = start_worker()
    assert psutil.Process(worker.pid).cwd() == ROOT
    complete(db, _id, worker)
    text = output(db, _id)
    venv = os.path.realpath(os.path.join(space.home, "mypro", ".venv"))
    core4_file = os.path.realpath(reported(text)["CORE4"])
    assert core4_file.startswith(venv + os.sep), (
        "the project job imported core4 from %s, not from its venv %s"
        % (core4_file, venv))


def test_enqueue_errors_come_from_the_project_env(space, mypro, db):
    line = user_error(coco(space, "--enqueue", "mypro.myjob.Nope"))
    assert "Nope" in line, line
    line = user_error(coco(space, "--enqueue", "mypro.myjob.MyJob",
                           "attempts=0"))
    assert "attempts" in line, line
    line = user_error(coco(space, "--enqueue", "mypro.nomodule.Job"))
    assert "mypro.nomodule" in line, line
    assert db.sys_queue.count_documents({}) == 0


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


# 5. kill and restart of a project job ---------------------------------------

def test_kill_and_restart_project_job(space, mypro, db, start_worker,
                                      tmp_path):
    flag = str(tmp_path / "go")
    worker = start_worker()
    first = enqueue(space, "mypro.myjob.WaitJob", 'flag="%s"' % flag)
    doc = wait_for(lambda: db.sys_queue.find_one(
        {"_id": first, "state": "running", "locked.pid": {"$exists": True}}),
        60, message="the project job to run")
    pid = doc["locked"]["pid"]
    # the job process is a fork of mypro's launcher (mypro's python)
    cmdline = psutil.Process(pid).cmdline()
    assert cmdline[0] == os.path.join(space.home, "mypro", ".venv", "bin",
                                      "python"), cmdline

    out = ok(coco(space, "--kill", str(first)))
    assert "killed [%s]" % first in out, out
    doc = wait_state(db, first, ("killed",), worker=worker)
    assert "kill" in doc["last_error"]["exception"], doc["last_error"]
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(
        pid).status() == psutil.STATUS_ZOMBIE, 15,
        message="the killed job process to end")

    with open(flag, "w") as handle:
        handle.write("go\n")
    out = ok(coco(space, "--restart", str(first)))
    found = re.search(r"new _id \[([0-9a-f]{24})\]", out)
    assert found, out
    child = ObjectId(found.group(1))
    complete(db, child, worker)
    text = output(db, child)
    assert "WAIT-DONE" in text, text
    assert_ran_in(text, os.path.join(space.home, "mypro", ".venv"))
    old = db.sys_journal.find_one({"_id": first})
    assert old["state"] == "killed" and old["enqueued"]["child_id"] == child


# 5. croll.py ------------------------------------------------------------------

SECOND_JOBS = '''
import sys

from core4.queue.job import CoreJob


class SecondJob(CoreJob):
    author = "test"

    def execute(self, **kwargs):
        import core4
        import second
        print("SECOND-RAN")
        print("EXECUTABLE=%s" % sys.executable)
        print("PREFIX=%s" % sys.prefix)
        print("CORE4=%s" % core4.__file__)
        print("SECOND=%s" % second.__file__)
'''


@pytest.fixture(scope="module")
def second(space, pip_env):
    """The project ``second``, installed with ``croll.py`` from a local git
    repository (file:// URL) by a python without core4."""
    if not os.path.exists(CROLL):
        pytest.skip("no croll.py")
    repo = os.path.join(str(space.base), "second-repo")
    os.makedirs(os.path.join(repo, "second"))
    files = {
        "pyproject.toml": textwrap.dedent("""\
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "second"
            version = "0.1.0"
            dependencies = []

            [tool.setuptools.packages.find]
            include = ["second*"]
            """),
        "second/__init__.py": '__project__ = "core4"\n'
                              '__version__ = "0.1.0"\n',
        "second/jobs.py": SECOND_JOBS}
    for name, text in files.items():
        with open(os.path.join(repo, name), "w") as handle:
            handle.write(text)
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
    for args in (["init", "-q", "-b", "master"], ["add", "-A"],
                 [*identity, "commit", "-q", "-m", "second"]):
        ok(run(["git", *args], cwd=repo))
    # a bare python3 (no core4), of the version the wheelhouse is for
    python3 = getattr(sys, "_base_executable", None) or sys.executable
    proc = run([python3, CROLL, "second", "file://" + repo],
               cwd=space.neutral, env=pip_env, timeout=900)
    ok(proc)
    return os.path.join(space.home, "second")


def test_croll_project_job_runs_in_its_venv(space, second, db, start_worker):
    link = os.path.join(second, ".venv")
    assert os.path.islink(link)
    assert os.path.dirname(os.path.realpath(link)) == os.path.realpath(
        os.path.join(second, ".venvs"))
    proc = run([sys.executable, "-c", "import second"], cwd=space.neutral)
    assert proc.returncode != 0
    _id = enqueue(space, "second.jobs.SecondJob")
    worker = start_worker()
    complete(db, _id, worker)
    text = output(db, _id)
    assert "SECOND-RAN" in text, text
    assert_ran_in(text, link)
    values = reported(text)
    assert os.path.realpath(values["SECOND"]).startswith(
        os.path.realpath(link) + os.sep), text
    out = ok(coco(space, "--home"))
    assert any(line.split()[:2] == ["second", "0.1.0"]
               for line in out.splitlines() if line.strip()), out
