"""croll.py: core4's environment ./core4 and projects in <folder.home>.

Real git repositories (made with ``git init`` in tmp dirs), real venvs and
real pip. croll.py runs under the bare interpreter this venv was made from
(``sys.base_prefix``) in isolated mode, so it cannot see core4, with HOME a
tmp dir (never the real ~/.core4). pip installs from a wheelhouse built
once per module (core4's dependencies plus setuptools/wheel for build
isolation) with no index. core4's own repository is a bare clone of a
commit of this tree's HEAD. The whole file builds five venvs.
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

import croll
from core4.config.cascade import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROLL = os.path.join(ROOT, "croll.py")
BARE_PYTHON = os.path.join(sys.base_prefix, "bin", "python3")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
DEV_LINK = ("croll: ~/.core4/sample is your development project, linked by "
            "coco --init; set folder.home for production installs")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """core4 and all its dependency wheels, plus setuptools and wheel."""
    path = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(path), ROOT,
         "setuptools", "wheel"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(path)


class Repo:
    """A git repository holding a sample core4 project."""

    def __init__(self, path, package="sample", core4=True):
        self.path = path
        self.package = package
        self.core4 = core4
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    @property
    def url(self):
        return "file://%s" % self.path

    def git(self, *args):
        proc = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]
            + list(args), cwd=self.path, capture_output=True, text=True,
            env=dict(os.environ, **GIT_ENV))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def commit(self, version, dependencies=()):
        """Write the project at ``version`` and commit it; return the sha."""
        deps = ", ".join('"%s"' % dep for dep in dependencies)
        (self.path / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=64"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            '[project]\nname = "%s"\nversion = "%s"\ndependencies = [%s]\n\n'
            '[tool.setuptools.packages.find]\ninclude = ["%s*"]\n'
            % (self.package, version, deps, self.package))
        package = self.path / self.package
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(
            '"""A sample project."""\n\n%s__version__ = "%s"\n' % (
                '__project__ = "core4"\n' if self.core4 else "", version))
        (package / "jobs.py").write_text(
            "import core4.queue.job\n\n\n"
            "class HelloJob(core4.queue.job.CoreJob):\n"
            "    author = 'mra'\n\n"
            "    def execute(self, **kwargs):\n"
            "        self.logger.info('hello')\n")
        return self.commit_all("version %s" % version)

    def commit_all(self, message):
        """Commit every change; return the sha."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.commit("1")
    return repo


def run_croll(home, *args, wheelhouse=None, via="option", croll=CROLL,
              cwd=None, **env):
    """Run ``croll`` like a user would; return the CompletedProcess.

    HOME is ``<home's parent>/user`` and no CORE4_* variable is inherited;
    ``home`` becomes folder.home ``via`` $CORE4_OPTION_folder__home
    ("option"), ``~/.core4/local.yaml`` ("local") or not at all (None);
    ``env`` adds variables.
    """
    user = home.parent / "user"
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV")
               and not k.startswith("CORE4_")}
    environ["HOME"] = str(user)
    if via == "option":
        environ["CORE4_OPTION_folder__home"] = str(home)
    elif via == "local":
        write(user / ".core4" / "local.yaml",
              "logging:\n  stderr: INFO\nfolder:\n  home: %s\n" % home)
    if wheelhouse:
        environ.update(PIP_FIND_LINKS=wheelhouse, PIP_NO_INDEX="1")
    environ.update(env)
    return subprocess.run([BARE_PYTHON, "-I", str(croll)] + list(args),
                          env=environ, cwd=str(cwd or home.parent),
                          capture_output=True, text=True, timeout=600)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def installed(home, code, python="sample/.venv/bin/python"):
    """Run ``code`` with the installed ``.venv`` python; return stdout."""
    python = home / python
    proc = subprocess.run([str(python), "-c", code], cwd=str(home.parent),
                          capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def state(home):
    with open(home / "sample" / "croll.json") as handle:
        return json.load(handle)


def current(home):
    return os.path.basename(os.path.realpath(home / "sample" / ".venv"))


def venvs(home):
    return sorted(os.listdir(home / "sample" / ".venvs"))


def assert_one_line(proc, code, start):
    """croll failed with exit ``code`` and one stderr line ``start...``."""
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def test_help():
    proc = subprocess.run(["python3", CROLL, "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0
    assert "REPOSITORY[@REF]" in proc.stdout
    assert "CORE4_OPTION_folder__home" in proc.stdout
    assert "CORE4_CONFIG" in proc.stdout and "./core4" in proc.stdout


@pytest.mark.parametrize("spec, expected", [
    ("file:///x/repo@develop", ("file:///x/repo", "develop")),
    ("file:///x/repo", ("file:///x/repo", None)),
    ("/path/repo", ("/path/repo", None)),
    ("/path/repo@v1", ("/path/repo", "v1")),
    ("https://host/org/repo.git@v1.2", ("https://host/org/repo.git", "v1.2")),
    ("https://user@host/repo.git", ("https://user@host/repo.git", None)),
    ("https://user@host/repo@feature/x", ("https://user@host/repo",
                                          "feature/x")),
    ("ssh://git@host/repo.git@main", ("ssh://git@host/repo.git", "main")),
    ("git@host:org/repo.git", ("git@host:org/repo.git", None)),
    ("git@host:org/repo.git@v1", ("git@host:org/repo.git", "v1")),
])
def test_split_repository(spec, expected):
    assert croll.split_repository(spec) == expected


def test_split_repository_relative_and_bad():
    assert croll.split_repository("repo@x") == (os.path.abspath("repo"), "x")
    for spec in ("file:///x/repo@", "file:///x/repo@-x", "@v1"):
        with pytest.raises(croll.CrollError) as info:
            croll.split_repository(spec)
        assert info.value.code == 2


def test_install_rerun_upgrade_failure_and_refs(tmp_path, repo, wheelhouse):
    home = tmp_path / "home"
    c1 = repo.git("rev-parse", "HEAD")
    repo.git("tag", "v1")

    # install from a file:// URL: core4 from this source tree, no index;
    # folder.home from ~/.core4/local.yaml
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse,
                     via="local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "folder.home %s (from ~/.core4/local.yaml)" % home in proc.stdout
    assert "cloning %s" % repo.url in proc.stdout
    assert "installing core4 from %s" % ROOT in proc.stdout
    assert "installed sample at %s" % c1 in proc.stdout
    first = state(home)
    assert first["commit"] == c1
    assert first["project"] == "sample" and first["ref"] is None
    assert first["repository"] == repo.url and first["core4"] == ROOT
    assert first["python"] == str(home / "sample" / ".venv/bin/python")
    assert os.path.islink(home / "sample" / ".venv")
    assert current(home) == c1 and venvs(home) == [c1]
    out = installed(home, "import sample, sample.jobs, core4; "
                          "print(sample.__version__, core4.__file__)")
    version, core4_file = out.split()
    assert version == "1"
    assert os.path.realpath(core4_file).startswith(
        os.path.realpath(home / "sample" / ".venvs" / c1))
    with open(home / "sample" / ".venv" / "bin" / "coco") as handle:
        assert ".venvs/%s/bin/python" % c1 in handle.read(2000)

    # again: nothing to do
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse,
                     via="local")
    assert proc.returncode == 0, proc.stderr
    assert "sample is up to date at %s" % c1 in proc.stdout
    assert "installing" not in proc.stdout
    assert state(home) == first and venvs(home) == [c1]

    # upgrade to a new commit; the previous venv is kept for rollback
    c2 = repo.commit("2")
    repo.git("branch", "develop")
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse,
                     via="local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed sample at %s" % c2 in proc.stdout
    assert state(home)["commit"] == c2
    assert current(home) == c2 and venvs(home) == sorted([c1, c2])
    assert installed(home, "import sample; print(sample.__version__)") == "2"

    # a failing upgrade: one line, exit 1, the previous install untouched
    before = state(home)
    repo.commit("3", dependencies=["doesnotexist-croll-xyz>=1"])
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse,
                     via="local")
    line = assert_one_line(proc, 1, "croll: pip install failed for sample: ")
    assert "doesnotexist-croll-xyz" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert state(home) == before
    assert current(home) == c2 and venvs(home) == sorted([c1, c2])
    assert installed(home, "import sample, core4; print(sample.__version__)") \
        == "2"

    # @tag: back to the kept venv of c1 without rebuilding it
    proc = run_croll(home, "sample", repo.url + "@v1", wheelhouse=wheelhouse,
                     via="local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reusing" in proc.stdout and "installing" not in proc.stdout
    assert state(home)["commit"] == c1 and state(home)["ref"] == "v1"
    assert current(home) == c1 and venvs(home) == sorted([c1, c2])
    assert installed(home, "import sample; print(sample.__version__)") == "1"

    # @branch: develop is at c2 while main is at the broken c3
    proc = run_croll(home, "sample", repo.url + "@develop",
                     wheelhouse=wheelhouse,
                     via="local")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert state(home)["commit"] == c2 and state(home)["ref"] == "develop"
    assert current(home) == c2
    assert installed(home, "import sample; print(sample.__version__)") == "2"


def test_bad_url(tmp_path):
    home = tmp_path / "home"
    url = "file://%s" % (tmp_path / "nope")
    proc = run_croll(home, "sample", url)
    assert_one_line(proc, 2, "croll: cannot clone %s: repository not found"
                    % url)
    assert not (home / "sample").exists()


def test_unknown_ref(tmp_path, repo):
    home = tmp_path / "home"
    proc = run_croll(home, "sample", repo.url + "@nope")
    assert_one_line(proc, 2, "croll: unknown ref 'nope' in %s" % repo.url)
    assert not (home / "sample" / "croll.json").exists()


def test_bad_project_name(tmp_path, repo):
    proc = run_croll(tmp_path / "home", "1sample", repo.url)
    assert_one_line(proc, 2, "croll: bad project name '1sample'")


def test_not_a_core4_project(tmp_path, repo):
    home = tmp_path / "home"
    plain = Repo(tmp_path / "plain", core4=False)
    plain.commit("1")
    proc = run_croll(home, "sample", plain.url)
    assert_one_line(proc, 2, "croll: %s is not a core4 project named sample"
                    % plain.url)
    # a core4 project, but not the one asked for
    proc = run_croll(home, "other", repo.url)
    assert_one_line(proc, 2, "croll: %s is not a core4 project named other"
                    % repo.url)
    assert not home.exists() or os.listdir(home) == []


def test_bad_project_name_reserved(tmp_path, repo):
    proc = run_croll(tmp_path / "home", "mongo", repo.url)
    assert_one_line(proc, 2, "croll: project name 'mongo' is reserved")


def test_candidates():
    assert croll.candidates("file:///x/mypro/.repos", "mypro") == [
        "file:///x/mypro/.repos", "file:///x/mypro/.repos/mypro.git"]
    assert croll.candidates("/x/mypro/.repos/", "mypro") == [
        "/x/mypro/.repos/", "/x/mypro/.repos/mypro.git"]
    assert croll.candidates("ssh://h/x/mypro.git", "mypro") == [
        "ssh://h/x/mypro.git"]


@pytest.mark.parametrize("text", [
    "",
    "folder:\n  home: /srv/core4\n",
    "folder:\n  # production\n  root: /data\n  home: '/srv/core 4'  # quoted\n",
    'DEFAULT:\n  mongo_database: x\nfolder:\n    home: "~/core4.prod"\n'
    "logging:\n  stderr: DEBUG\n",
    "folder:   # the folders\n  home: ~/core4.prod # tilde\n  root: /d\n",
    "folder:\n  root: /data\n",
    "logging:\n  stderr: INFO\n# folder:\n#   home: /nope\n",
])
def test_folder_home_reader_agrees_with_core4(tmp_path, text):
    path = tmp_path / "local.yaml"
    path.write_text(text)
    expected = load_config(local_file=str(path), environ={}).folder.home
    found = croll.read_folder_home(path) or "~/.core4"
    assert os.path.expanduser(found) == expected


def test_core4_home_cascade(tmp_path, monkeypatch):
    """In a python with core4 (this one) croll uses core4's cascade."""
    for name in list(os.environ):
        if name.startswith("CORE4_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert croll.core4_home() == (tmp_path / "user" / ".core4",
                                  "core4's default")
    write(tmp_path / "user" / ".core4" / "local.yaml",
          "folder:\n  home: ~/core4.prod\n")
    assert croll.core4_home() == (tmp_path / "user" / "core4.prod",
                                  "~/.core4/local.yaml")
    write(tmp_path / "other.yaml", "folder:\n  home: %s/o\n" % tmp_path)
    monkeypatch.setenv("CORE4_CONFIG", str(tmp_path / "other.yaml"))
    assert croll.core4_home()[0] == tmp_path / "o"
    monkeypatch.setenv("CORE4_OPTION_folder__home", str(tmp_path / "e"))
    assert croll.core4_home() == (tmp_path / "e",
                                  "$CORE4_OPTION_folder__home")
    monkeypatch.setenv("CORE4_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(croll.CrollError) as info:
        croll.core4_home()
    assert "missing.yaml: configuration file not found" in str(info.value)


def test_ssh_clone_failure_keeps_reason(tmp_path):
    home = tmp_path / "home"
    url = "ssh://git@nonexistent.invalid/x.git"
    proc = run_croll(home, "sample", url + "@main")
    line = assert_one_line(proc, 2, "croll: cannot clone %s: " % url)
    assert "Could not resolve hostname" in line, line
    assert not (home / "sample").exists()


def tree(path):
    """Every path below ``path`` (symlinks not followed)."""
    return sorted(os.path.relpath(os.path.join(folder, name), path)
                  for folder, dirs, files in os.walk(path)
                  for name in dirs + files)


def dev_project(path, layout):
    """A development project as ``coco --init`` makes it: a repository on
    main and its bare origin in ``.repos`` ("new": ``.repos`` itself) or
    ``.repos/sample.git`` ("old")."""
    repo = Repo(path)
    repo.commit("1")
    (path / ".git" / "info").mkdir(exist_ok=True)
    (path / ".git" / "info" / "exclude").write_text(".repos/\n")
    bare = path / ".repos" / ("sample.git" if layout == "old" else "")
    repo.git("init", "-q", "--bare", str(bare))
    repo.git("push", "-q", str(bare), "main")
    repo.git("--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/main")
    return repo


def test_dev_project_refused_untouched_and_old_repos(tmp_path):
    """croll refuses the project coco --init linked into ~/.core4 without
    writing into it; with folder.home set in ~/.core4/local.yaml it goes
    there, and an old-style .repos (holding sample.git) is the repository."""
    home, user = tmp_path / "home", tmp_path / "user"
    dev = dev_project(tmp_path / "dev" / "sample", "old")
    (user / ".core4").mkdir(parents=True)
    os.symlink(dev.path, user / ".core4" / "sample")
    before = tree(dev.path)
    url = "file://%s/.repos" % dev.path
    proc = run_croll(home, "sample", url, via=None)
    assert_one_line(proc, 2, DEV_LINK)
    assert proc.stdout == ""
    assert tree(dev.path) == before and dev.git("status", "--porcelain") == ""

    # a project created inside the home (no link) is refused the same way
    plain = tmp_path / "plain"
    shutil.copytree(dev.path, plain / "sample", symlinks=True)
    proc = run_croll(plain, "sample", url)
    assert_one_line(proc, 2, "croll: %s is not an install made by croll.py"
                    % (plain / "sample"))
    assert tree(plain / "sample") == before

    # folder.home in ~/.core4/local.yaml: the dev link is not in the way,
    # and .repos/sample.git is found (stopped at an unknown ref)
    proc = run_croll(home, "sample", url + "@nope", via="local")
    assert_one_line(proc, 2, "croll: unknown ref 'nope' in %s/sample.git"
                    % url)
    assert "folder.home %s (from ~/.core4/local.yaml)" % home in proc.stdout
    assert tree(dev.path) == before and not (home / "sample").exists()


def test_core4_env_refuses_foreign_directory(tmp_path):
    """./core4 that croll did not make (here: core4's source tree) is
    refused before anything is written."""
    (tmp_path / "core4").mkdir()
    (tmp_path / "core4" / "__init__.py").write_text("")
    proc = run_croll(tmp_path / "home", "core4", "file:///nowhere@main",
                     cwd=tmp_path)
    assert_one_line(proc, 2, "croll: %s exists and is not a core4 "
                    "environment made by croll.py" % (tmp_path / "core4"))
    assert os.listdir(tmp_path / "core4") == ["__init__.py"]


@pytest.fixture(scope="module")
def core4_repo(tmp_path_factory):
    """A bare repository of core4 (this tree's HEAD) on branch main, and
    the working repository that pushes to it."""
    base = tmp_path_factory.mktemp("core4repo")
    work = Repo(base / "work")
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"],
                             cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(work.path, filter="data")
    work.git("add", "-A")
    work.git("commit", "-q", "-m", "core4")
    work.git("clone", "-q", "--bare", str(work.path), str(base / "core4.git"))
    return work, base / "core4.git"


@pytest.fixture(scope="module")
def core4_env(core4_repo, wheelhouse, tmp_path_factory):
    """Tutorial steps #1-#3: a croll.py fetched alone into ``prod`` runs
    ``croll.py core4 URL@main`` there; returns (prod, CompletedProcess)."""
    prod = tmp_path_factory.mktemp("tutorial") / "prod"
    prod.mkdir()
    shutil.copy(CROLL, prod / "croll.py")
    proc = run_croll(prod, "core4", "file://%s@main" % core4_repo[1],
                     wheelhouse=wheelhouse, croll=prod / "croll.py",
                     cwd=prod, via=None)
    return prod, proc


def activated(prod, command):
    """Run ``command`` in bash after ``. core4/bin/activate`` in ``prod``."""
    proc = subprocess.run(
        ["bash", "-c", ". core4/bin/activate && " + command], cwd=str(prod),
        capture_output=True, text=True, env={"PATH": os.environ["PATH"],
                                             "HOME": str(prod.parent)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_core4_environment_install_rerun_upgrade(core4_env, core4_repo,
                                                 wheelhouse):
    prod, proc = core4_env
    work, bare = core4_repo
    url = "file://%s" % bare
    c1 = work.git("rev-parse", "HEAD")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed core4 at %s into %s" % (c1, prod / "core4") \
        in proc.stdout
    assert "activate it with: . core4/bin/activate" in proc.stdout
    assert (prod / "core4" / "bin" / "activate").is_file()
    out = activated(prod, "command -v coco && coco --version && python -c "
                    "'import core4; print(core4.__file__)'").split("\n")
    assert out[0] == str(prod / "core4" / "bin" / "coco")
    assert re.match(r"core4 \S+$", out[1])
    assert out[2] == str(prod / "core4" / ".src" / "core4" / "__init__.py")
    info = json.loads((prod / "core4" / "croll.json").read_text())
    assert info["project"] == "core4" and info["commit"] == c1
    assert info["repository"] == url and info["ref"] == "main"

    # again: nothing to do
    run = dict(wheelhouse=wheelhouse, croll=prod / "croll.py", cwd=prod,
               via=None)
    proc = run_croll(prod, "core4", url + "@main", **run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core4 is up to date at %s" % c1 in proc.stdout
    assert "installing" not in proc.stdout

    # a new commit on main: upgraded in place
    init = work.path / "core4" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]*"', '__version__ = "99.0"',
                           init.read_text()))
    c2 = work.commit_all("version 99.0")
    work.git("push", "-q", str(bare), "main")
    proc = run_croll(prod, "core4", url + "@main", **run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed core4 at %s" % c2 in proc.stdout
    assert "creating" not in proc.stdout
    assert activated(prod, "coco --version") == "core4 99.0\n"

    # a commit that is not core4: refused, the installed code checked out
    work.git("rm", "-q", "pyproject.toml")
    work.commit_all("broken")
    work.git("push", "-q", str(bare), "main")
    proc = run_croll(prod, "core4", url + "@main", **run)
    assert_one_line(proc, 2, "croll: %s is not core4's repository" % url)
    assert subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=prod / "core4" / ".src",
        capture_output=True, text=True).stdout.strip() == c2
    assert activated(prod, "coco --version") == "core4 99.0\n"


def test_core4_found_without_option(core4_env, tmp_path, monkeypatch):
    """A croll.py fetched alone (not in a core4 tree) takes core4 from
    ./core4, else from the active environment, else says what to do."""
    prod = core4_env[0]
    source = str(prod / "core4" / ".src")
    monkeypatch.setattr(croll, "CORE4_SOURCE", tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.chdir(prod)
    assert croll.core4_target(None) == source
    monkeypatch.chdir(tmp_path)
    with pytest.raises(croll.CrollError) as info:
        croll.core4_target(None)
    assert "activate a core4 environment, or use --core4" in str(info.value)
    monkeypatch.setenv("VIRTUAL_ENV", str(prod / "core4"))
    assert croll.core4_target(None) == source
    assert croll.core4_target(ROOT) == ROOT


def test_project_with_croll_alone(core4_env, wheelhouse, tmp_path):
    """Production: croll.py fetched alone installs a project from its bare
    ``.repos`` into folder.home from $CORE4_CONFIG, with core4 from
    ./core4 (no --core4), though ~/.core4/sample is the dev link."""
    prod = core4_env[0]
    home, user = tmp_path / "prodhome", tmp_path / "user"
    dev = dev_project(tmp_path / "dev" / "sample", "new")
    (user / ".core4").mkdir(parents=True)
    os.symlink(dev.path, user / ".core4" / "sample")
    write(tmp_path / "local.yaml", "folder:\n  # production\n  home: '%s'\n"
          % home)
    url = "file://%s/.repos" % dev.path
    before = tree(dev.path)
    proc = run_croll(tmp_path / "x", "sample", url, wheelhouse=wheelhouse,
                     croll=prod / "croll.py", cwd=prod, via=None,
                     HOME=str(user), CORE4_CONFIG=str(tmp_path / "local.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "folder.home %s (from %s)" % (home, tmp_path / "local.yaml") \
        in proc.stdout
    assert "installing core4 from %s" % (prod / "core4" / ".src") \
        in proc.stdout
    assert "cloning %s\n" % url in proc.stdout
    assert json.loads((home / "sample" / "croll.json").read_text())[
        "repository"] == url
    out = installed(home, "import sample, core4; print(core4.__file__)")
    assert os.path.realpath(out).startswith(
        os.path.realpath(home / "sample" / ".venvs"))
    assert tree(dev.path) == before
