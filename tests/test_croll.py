"""croll.py: install a core4 project from git into <home>/<project>/.venv.

Real git repositories (made with ``git init`` in tmp dirs), real venvs and
real pip. croll.py runs under the bare interpreter this venv was made from
(``sys.base_prefix``) in isolated mode, so it cannot see core4. pip in the
project venvs installs from a wheelhouse built once per module (core4's
dependencies plus setuptools/wheel for build isolation) with no index.
The whole file builds three venvs.
"""

import json
import os
import subprocess
import sys

import pytest

import croll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROLL = os.path.join(ROOT, "croll.py")
BARE_PYTHON = os.path.join(sys.base_prefix, "bin", "python3")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


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
        path.mkdir()
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
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "version %s" % version)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.commit("1")
    return repo


def run_croll(home, *args, wheelhouse=None, python=BARE_PYTHON):
    """Run croll.py like a user would; return the CompletedProcess."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CORE4_OPTION_folder__home"] = str(home)
    if wheelhouse:
        env.update(PIP_FIND_LINKS=wheelhouse, PIP_NO_INDEX="1")
    return subprocess.run([python, "-I", CROLL] + list(args), env=env,
                          cwd=str(home.parent), capture_output=True,
                          text=True, timeout=600)


def installed(home, code):
    """Run ``code`` with the installed ``.venv`` python; return stdout."""
    python = home / "sample" / ".venv" / "bin" / "python"
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

    # install from a file:// URL: core4 from this source tree, no index
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse)
    assert proc.returncode == 0, proc.stdout + proc.stderr
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
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse)
    assert proc.returncode == 0, proc.stderr
    assert "sample is up to date at %s" % c1 in proc.stdout
    assert "installing" not in proc.stdout
    assert state(home) == first and venvs(home) == [c1]

    # upgrade to a new commit; the previous venv is kept for rollback
    c2 = repo.commit("2")
    repo.git("branch", "develop")
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed sample at %s" % c2 in proc.stdout
    assert state(home)["commit"] == c2
    assert current(home) == c2 and venvs(home) == sorted([c1, c2])
    assert installed(home, "import sample; print(sample.__version__)") == "2"

    # a failing upgrade: one line, exit 1, the previous install untouched
    before = state(home)
    repo.commit("3", dependencies=["doesnotexist-croll-xyz>=1"])
    proc = run_croll(home, "sample", repo.url, wheelhouse=wheelhouse)
    line = assert_one_line(proc, 1, "croll: pip install failed for sample: ")
    assert "doesnotexist-croll-xyz" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert state(home) == before
    assert current(home) == c2 and venvs(home) == sorted([c1, c2])
    assert installed(home, "import sample, core4; print(sample.__version__)") \
        == "2"

    # @tag: back to the kept venv of c1 without rebuilding it
    proc = run_croll(home, "sample", repo.url + "@v1", wheelhouse=wheelhouse)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reusing" in proc.stdout and "installing" not in proc.stdout
    assert state(home)["commit"] == c1 and state(home)["ref"] == "v1"
    assert current(home) == c1 and venvs(home) == sorted([c1, c2])
    assert installed(home, "import sample; print(sample.__version__)") == "1"

    # @branch: develop is at c2 while main is at the broken c3
    proc = run_croll(home, "sample", repo.url + "@develop",
                     wheelhouse=wheelhouse)
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
