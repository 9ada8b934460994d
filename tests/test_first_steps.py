"""The tutorial's first steps, without tracebacks: ``coco --db``, ``coco
--who`` of a stopped embedded server, ``coco --init`` without a terminal and
its ``~/.core4/local.yaml``, a closed pipe, a job module run directly, and
``coco --jobs`` listing only job modules.

``coco`` runs as a real subprocess; a "fresh home" is a new ``HOME`` (and
``folder.home`` in it) without any core4 configuration. Creating a whole
project (a venv) is tested in ``tests/projects``; here nothing builds one.
"""

import json
import os
import pty
import re
import subprocess
import sys
import textwrap

import pymongo
import pytest
import yaml

from core4.config import reset_config
from core4.mongo import now
from core4.mongo.embedded import ensure_server, server_status, stop_server
from core4.project import create

DUMMY = "core4.queue.helper.job.DummyJob"


def tail(text, lines=5):
    return "\n".join((text or "").splitlines()[-lines:])


def coco(*args, env=None, cwd=None, stdin=subprocess.DEVNULL, timeout=60):
    return subprocess.run([sys.executable, "-m", "core4.script.coco", *args],
                          env=env, cwd=cwd, stdin=stdin, capture_output=True,
                          text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, (proc.args, tail(proc.stdout),
                                  tail(proc.stderr))
    assert "Traceback" not in proc.stdout + proc.stderr, tail(proc.stderr)
    return proc.stdout


def one_line_error(proc, code=2):
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, tail(output)
    assert proc.returncode == code, (proc.args, proc.returncode, output)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("coco: "), proc.stderr
    return lines[0]


class Fresh:
    """A new user's HOME: no configuration, the embedded database."""

    def __init__(self, base):
        self.home = str(base / "user")
        os.makedirs(self.home)
        self.core4 = os.path.join(self.home, ".core4")
        self.data_dir = os.path.join(self.core4, "mongo")
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("CORE4_") and key not in (
                        "PYTHONPATH", "VIRTUAL_ENV")}
        self.env.update(HOME=self.home,
                        CORE4_OPTION_folder__home=self.core4)

    def status(self):
        """``coco --db`` as ``{key: value}``."""
        found = {}
        for line in ok(coco("--db", env=self.env)).splitlines():
            key, sep, value = line.partition(":")
            assert sep, line
            found[key.strip()] = value.strip()
        return found


@pytest.fixture
def fresh(tmp_path, request):
    space = Fresh(tmp_path)
    request.addfinalizer(lambda: stop_server(space.data_dir))
    return space


# coco --db -------------------------------------------------------------------

def test_db_status_start_stop_and_who(fresh):
    # never started: --db and --who say so and start nothing
    status = fresh.status()
    assert status["state"].startswith("not running"), status
    assert status["data dir"] == fresh.data_dir
    who = ok(coco("--who", env=fresh.env))
    assert "not running" in who and "not started" not in who, who
    assert server_status(fresh.data_dir) is None

    out = ok(coco("--db", "start", env=fresh.env))
    assert out.startswith("started the embedded NX-27017: pid "), out
    running = server_status(fresh.data_dir)
    assert running and running["alive"], running
    status = fresh.status()
    assert status["state"].startswith("running (pid %d, since "
                                      % running["pid"]), status
    assert status["port"] == str(running["port"])
    assert status["url"] == running["url"]
    assert status["data dir"] == fresh.data_dir
    assert re.fullmatch(r"\d+(\.\d)? (B|KiB|MiB|GiB)", status["size"]), status
    import importlib.metadata
    assert status["version"] == "nx-27017 %s" % importlib.metadata.version(
        "nx-27017")
    assert "already" in ok(coco("--db", "start", env=fresh.env))
    who = ok(coco("--who", env=fresh.env))
    assert "pid %d" % running["pid"] in who and running["url"] in who, who

    out = ok(coco("--db", "stop", env=fresh.env))
    assert out.startswith("stopped the embedded NX-27017 (pid %d)"
                          % running["pid"]), out
    status = fresh.status()
    assert status["state"].startswith("not running"), status
    assert status["port"] == str(running["port"])  # kept for the next start
    who = ok(coco("--who", env=fresh.env))
    assert "database: embedded NX-27017, not running" in who, who
    assert server_status(fresh.data_dir) is None  # --who started nothing
    assert "not running" in ok(coco("--db", "stop", env=fresh.env))

    ok(coco("--db", "start", env=fresh.env))
    again = server_status(fresh.data_dir)
    assert again["alive"] and again["port"] == running["port"], again
    assert again["pid"] != running["pid"]


def test_db_stop_is_refused_while_a_daemon_uses_it(fresh):
    ok(coco("--db", "start", env=fresh.env))
    url = ensure_server(fresh.data_dir)  # (with the server's credentials)
    client = pymongo.MongoClient(url)
    try:
        client.core4.sys_worker.insert_one({
            "_id": "w9@elsewhere", "kind": "worker", "pid": 1,
            "hostname": "elsewhere", "phase": "loop", "heartbeat": now(),
            "started_at": now()})
        line = one_line_error(coco("--db", "stop", env=fresh.env))
        assert "w9@elsewhere" in line and "coco --halt" in line, line
        assert server_status(fresh.data_dir)["alive"]
        client.core4.sys_worker.update_one({"_id": "w9@elsewhere"},
                                           {"$set": {"phase": "exit"}})
    finally:
        client.close()
    assert "stopped" in ok(coco("--db", "stop", env=fresh.env))


def test_db_with_a_configured_mongo_url_starts_nothing(fresh):
    env = dict(fresh.env, CORE4_OPTION_DEFAULT__mongo_url=(
        "mongodb://u:secret@127.0.0.1:1/"))
    for args in (["--db"], ["--db", "start"], ["--db", "stop"]):
        line = one_line_error(coco(*args, env=env))
        assert "not embedded" in line and "secret" not in line, line
    assert not os.path.exists(fresh.data_dir)
    line = one_line_error(coco("--db", "restart", env=fresh.env))
    assert "restart" in line, line


# coco --init: no terminal, local.yaml ----------------------------------------

def test_init_without_a_terminal_needs_yes(fresh, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = coco("--init", "mypro", "My project", env=fresh.env,
                cwd=str(work))
    line = one_line_error(proc)
    assert "--yes" in line and "terminal" in line, line
    assert proc.stdout == ""
    # piped "yes" is not a terminal either
    proc = subprocess.run([sys.executable, "-m", "core4.script.coco",
                           "--init", "mypro"], input="yes\n", env=fresh.env,
                          cwd=str(work), capture_output=True, text=True,
                          timeout=60)
    assert "terminal" in one_line_error(proc)
    assert os.listdir(str(work)) == []
    assert not os.path.exists(fresh.core4)


def test_init_on_a_terminal_asks(fresh, tmp_path):
    """On a terminal, --init asks; anything but yes creates nothing."""
    work = tmp_path / "work"
    work.mkdir()
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core4.script.coco", "--init", "mypro",
             "My project"], stdin=slave, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=fresh.env, cwd=str(work), text=True)
        os.write(master, b"no\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 2, (out, err)
    assert "core4 project mypro: My project" in out, out
    assert err.strip() == "coco: project mypro not created", err
    assert os.listdir(str(work)) == []
    assert not os.path.exists(os.path.join(fresh.core4, "local.yaml"))


def _load(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def test_local_yaml_of_the_first_init(fresh, monkeypatch):
    """What --init writes to ~/.core4/local.yaml (in-process): where
    mongo_url, logging and folder.home go, commented for the embedded
    database; valid; never overwritten; not written when a local file
    exists."""
    from core4.config import get_config
    for key in list(os.environ):
        if key.startswith("CORE4_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", fresh.home)
    reset_config()
    try:
        lines = []
        path = create.write_local_config(get_config(), lines.append)
        assert path == os.path.join(fresh.core4, "local.yaml")
        assert lines and "local.yaml" in lines[0], lines
        text = open(path).read()
        for setting in ("#   mongo_url: mongodb://", "# logging:",
                        "#   mongodb: INFO", "# folder:",
                        "#   home: ~/.core4"):
            assert setting in text, text
        assert _load(path) is None  # all comments: it changes nothing
        reset_config()
        config = get_config()
        assert config.sys.queue.url is None
        assert config.folder.home == fresh.core4
        who = ok(coco("--who", env=dict(fresh.env)))
        assert "config file: %s" % path in who, who
        # never overwritten
        with open(path, "a") as handle:
            handle.write("# mine\n")
        assert create.write_local_config(config, lines.append) is None
        assert open(path).read() == text + "# mine\n"

        # a configured mongo_url goes in, uncommented, readable only by us
        os.remove(path)
        monkeypatch.setenv("CORE4_OPTION_DEFAULT__mongo_url",
                           "mongodb://u:p@db.example:27017/?replicaSet=rs0")
        reset_config()
        path = create.write_local_config(get_config(), lines.append)
        assert _load(path)["DEFAULT"] == {
            "mongo_url": "mongodb://u:p@db.example:27017/?replicaSet=rs0",
            "mongo_database": "core4"}
        assert os.stat(path).st_mode & 0o077 == 0

        # $CORE4_CONFIG names the local file: nothing is written
        os.remove(path)
        other = os.path.join(fresh.home, "other.yaml")
        with open(other, "w") as handle:
            handle.write("{}\n")
        monkeypatch.setenv("CORE4_CONFIG", other)
        reset_config()
        assert create.write_local_config(get_config(), lines.append) is None
        assert not os.path.exists(path)
    finally:
        reset_config()


def test_new_project_layout_without_venv(tmp_path, monkeypatch):
    """Files and repository of a new project (no venv here): version
    0.0.1, ``.repos`` itself the bare origin; an older project's
    ``.repos/NAME.git`` stays its origin."""
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv("GIT_%s_NAME" % who, "Tester")
        monkeypatch.setenv("GIT_%s_EMAIL" % who, "tester@example.com")
    root = str(tmp_path / "mypro")
    os.makedirs(root)
    create.write_files(root, "mypro", "My project", lambda line: None)
    create.make_repository(root, "mypro", lambda line: None)
    with open(os.path.join(root, "mypro", "__init__.py")) as handle:
        assert '__version__ = "0.0.1"' in handle.read()

    def git(*args, cwd=root):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True,
                              text=True, check=True).stdout.strip()

    repos = os.path.join(root, ".repos")
    assert git("remote", "get-url", "origin") == repos
    assert git("rev-parse", "--is-bare-repository", cwd=repos) == "true"
    assert set(git("for-each-ref", "--format=%(refname:short)",
                   "refs/heads", cwd=repos).split()) == {"master", "develop"}
    assert git("status", "--porcelain") == ""
    # an older project: .repos holds mypro.git
    old = str(tmp_path / "old")
    os.makedirs(os.path.join(old, ".repos", "mypro.git"))
    assert create.origin_path(old, "mypro") == os.path.join(
        old, ".repos", "mypro.git")
    assert create.origin_path(root, "mypro") == repos


def test_core4_source_of_an_installed_core4(monkeypatch, tmp_path):
    """From a project's environment (core4 installed, not editable) the
    source is where pip installed it from; CORE4_SOURCE is not needed."""
    monkeypatch.delenv("CORE4_SOURCE", raising=False)
    monkeypatch.setattr(create, "_is_core4_tree", lambda path: False)

    class Dist:
        def __init__(self, text):
            self.text = text

        def read_text(self, name):
            assert name == "direct_url.json"
            return self.text

    def use(info):
        monkeypatch.setattr(create.importlib.metadata, "distribution",
                            lambda name: Dist(json.dumps(info)))

    source = tmp_path / "core4-src"
    source.mkdir()
    use({"url": "file://%s" % source, "dir_info": {}})
    assert create.core4_source() == str(source)
    use({"url": "https://git.example.com/core4.git",
         "vcs_info": {"vcs": "git", "commit_id": "abc123"}})
    assert create.core4_source() == \
        "git+https://git.example.com/core4.git@abc123"
    use({"url": "file://%s/gone" % tmp_path, "dir_info": {}})
    with pytest.raises(create.Core4UserError) as info:
        create.core4_source()
    assert "CORE4_SOURCE" in str(info.value)
    monkeypatch.setenv("CORE4_SOURCE", str(source))
    assert create.core4_source() == str(source)


# a closed pipe ---------------------------------------------------------------

def test_a_closed_pipe_ends_coco_quietly(core4_env):
    from core4.queue.queue import CoreQueue
    _id = CoreQueue().enqueue(DUMMY, sleep=1)._id
    # more output than a pipe holds: coco surely writes after head left
    core4_env.db().sys_stdout.insert_one({"_id": _id,
                                          "stdout": "line\n" * 100000})
    coco_cmd = "%s -m core4.script.coco" % sys.executable
    for args in ("--detail %s" % _id, "--help", "--listing"):
        proc = subprocess.run(
            ["bash", "-c", "%s %s | head -1; echo \"rc=${PIPESTATUS[0]}\""
             % (coco_cmd, args)], capture_output=True, text=True,
            timeout=60, stdin=subprocess.DEVNULL)
        assert proc.stderr == "", (args, proc.stderr)
        first, rc = proc.stdout.splitlines()
        assert rc in ("rc=0", "rc=141"), (args, proc.stdout)
    assert first.startswith("_id"), first


# a job module run directly -------------------------------------------------

RUNME = '''
import core4.queue.job


class RunJob(core4.queue.job.CoreJob):
    author = "test"

    def execute(self, **kwargs):
        print("RAN")


if __name__ == "__main__":
    from core4.queue.helper.functool import execute
    print("QUAL_NAME=%s" % RunJob.qual_name())
    doc = execute(RunJob)
    print("STATE=%s NAME=%s" % (doc["state"], doc["name"]))
'''


def test_a_job_module_run_directly_is_named_by_its_package(core4_env,
                                                           tmp_path):
    project = tmp_path / "proj"
    (project / "pkgx" / "sub").mkdir(parents=True)
    (project / "pkgx" / "__init__.py").write_text("")
    (project / "pkgx" / "sub" / "__init__.py").write_text("")
    (project / "pkgx" / "sub" / "runme.py").write_text(RUNME)
    (project / "plain.py").write_text(RUNME)
    env = dict(os.environ, PYTHONPATH=str(project))

    def run(script, env):
        proc = subprocess.run([sys.executable, script], cwd=str(project),
                              env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, tail(proc.stderr)
        return dict(re.findall(r"^(QUAL_NAME|STATE)=(\S+)", proc.stdout,
                               re.M)), proc.stdout

    # the package is importable (installed, or on the path)
    found, out = run("pkgx/sub/runme.py", env)
    assert found == {"QUAL_NAME": "pkgx.sub.runme.RunJob",
                     "STATE": "complete"}, out
    assert "NAME=pkgx.sub.runme.RunJob" in out
    # not importable as a package: named as before, from sys.path
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    found, out = run("pkgx/sub/runme.py", bare)
    assert found == {"QUAL_NAME": "runme.RunJob", "STATE": "complete"}, out
    # a plain module (no package), as in the quickstart
    found, out = run("plain.py", env)
    assert found == {"QUAL_NAME": "plain.RunJob", "STATE": "complete"}, out


# coco --jobs: job modules only -----------------------------------------------

def test_jobs_lists_only_modules_that_may_define_jobs(tmp_path, monkeypatch):
    from core4.queue.registry import collect
    package = tmp_path / "pkgjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("import not_installed_anywhere\n"
                                       "class Tool:\n    pass\n")
    (package / "broken.py").write_text(textwrap.dedent("""\
        import not_installed_anywhere
        from core4.queue.job import CoreJob


        class Nightly(CoreJob):
            author = "test"
        """))
    (package / "syntax.py").write_text("class Oops(:\n")
    (package / "good.py").write_text(textwrap.dedent("""\
        from core4.queue.job import CoreJob


        class Fine(CoreJob):
            author = "test"

            def execute(self, **kwargs):
                pass
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = {entry["name"]: entry for entry in collect("pkgjobs")}
    assert set(entries) == {"pkgjobs.broken", "pkgjobs.syntax",
                            "pkgjobs.good.Fine"}, entries
    assert entries["pkgjobs.good.Fine"]["valid"] is True
    assert "not_installed_anywhere" in entries["pkgjobs.broken"]["exception"]
    assert entries["pkgjobs.syntax"]["valid"] is False
    # core4's own: only its job classes (apidoc needs docutils, no jobs)
    names = [entry["name"] for entry in collect("core4")]
    assert names and all(".job." in name for name in names), names
