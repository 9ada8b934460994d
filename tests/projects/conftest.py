"""Fixtures of the project environment tests (package scope: the
two project venvs and the wheelhouse are built once for all
files of this package).

A project created with ``coco --init`` (``mypro``) and one installed with
``croll.py`` (``second``) live in a core4 home shared by this module; their
jobs are enqueued from core4's own environment (where they cannot be
imported) and run by real workers with the project's ``.venv`` python.

Speed: the two project venvs are built once per package, from a wheelhouse
built once per package (``pip`` runs with ``PIP_NO_INDEX``: no network).
Each test gets a fresh database; the home (and the projects in it) is shared.

The worker, ``coco`` and project subprocesses run without ``PYTHONPATH``:
core4 is installed in /work/main/.venv, and a project job must import the
core4 and the packages of its own venv, not a source tree leaking in.
"""

import itertools
import os
import re
import subprocess
import sys
import textwrap

import pymongo
import pytest
from bson import ObjectId

from core4.config import reset_config
from tests.support import FAST, ROOT, WorkerProcess, find_job, wait_for

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


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
def wheelhouse(tmp_path_factory):
    """Wheels of core4, its dependencies and the build backend."""
    path = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(path), ROOT,
         "setuptools>=64", "wheel"], capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, tail(proc.stderr)
    return str(path)


@pytest.fixture(scope="package")
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
    def __init__(self, root, init, user_home, init_env):
        self.root = root
        self.python = os.path.join(root, ".venv", "bin", "python")
        self.init = init
        self.user_home = user_home   # the HOME coco --init ran with
        self.init_env = init_env     # its environment (no CORE4_CONFIG)
        self.local_yaml = os.path.join(user_home, ".core4", "local.yaml")


@pytest.fixture(scope="package")
def mypro(space, pip_env):
    """``coco --init mypro "My project" --yes``, then two job modules, and
    the package onlyhere installed into mypro's .venv only.

    The init runs as a new user would: in a HOME of its own, without
    CORE4_CONFIG (so it writes ``~/.core4/local.yaml`` there; everything
    else keeps using the module's configuration).

    mypro/__init__.py imports mypro.myjob, so the warm launcher (which
    preloads the project) holds the job's code: a code change must retire
    it."""
    work = os.path.join(str(space.base), "work")
    os.makedirs(work)
    user_home = os.path.join(str(space.base), "user")
    os.makedirs(user_home)
    init_env = {key: value for key, value in pip_env.items()
                if key != "CORE4_CONFIG"}
    init_env["HOME"] = user_home
    init = coco(space, "--init", "mypro", "My project", "--yes",
                env=init_env, cwd=work, timeout=900)
    ok(init)
    root = os.path.join(work, "mypro")
    project = Project(root, init, user_home, init_env)
    with open(project.local_yaml) as handle:
        project.local_yaml_text = handle.read()
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



def wait_final(db, _id, timeout=60, worker=None):
    """Wait until job ``_id`` ended (complete, error, killed, inactive) and,
    if complete, is journaled; return its doc."""
    def ended():
        doc = find_job(db, _id)
        if doc and doc["state"] in ("error", "killed", "inactive"):
            return doc
        return db.sys_journal.find_one({"_id": _id, "state": "complete"})
    try:
        return wait_for(ended, timeout, message="job %s to end" % _id)
    except AssertionError as exc:
        doc = find_job(db, _id) or {}
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


@pytest.fixture(scope="package")
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
