"""Release management (``coco --build`` / ``--release``) on real git repos."""

import re
import subprocess

import pytest

from core4.error import Core4UserError
from core4.project.release import ReleaseError, build, release

INIT = '''"""mypro."""
__project__ = "core4"
__version__ = "0.0.0"
__built__ = None
title = "my project"
'''


def git(cwd, *args):
    """Run git in ``cwd``; return stdout (fails the test on error)."""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def ident(monkeypatch, tmp_path):
    """A git identity by environment only; no global/system config."""
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv("GIT_%s_NAME" % who, "Tester")
        monkeypatch.setenv("GIT_%s_EMAIL" % who, "tester@example.com")


@pytest.fixture
def repo(tmp_path, ident):
    """A clone of a bare origin with master and develop, on develop."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "master", str(bare))
    work = tmp_path / "mypro"
    git(tmp_path, "clone", "--quiet", str(bare), str(work))
    git(work, "checkout", "--quiet", "-B", "master")
    write(work / "mypro" / "__init__.py", INIT)
    write(work / "README.md", "mypro\n")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "initial")
    git(work, "push", "--quiet", "-u", "origin", "master")
    git(work, "checkout", "--quiet", "-b", "develop")
    git(work, "push", "--quiet", "-u", "origin", "develop")
    return work


def origin(work):
    """The bare origin repository of the clone ``work``."""
    return work.parent / "origin.git"


def commit(work, name="feature.py", text="x = 1\n"):
    write(work / name, text)
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "add " + name)


def merge(work, branch, *targets):
    """Merge ``branch`` into ``targets`` like a user would; end on master."""
    for target in targets:
        git(work, "checkout", "--quiet", target)
        git(work, "merge", "--quiet", "--no-ff", "-m", "merge " + branch,
            branch)
    git(work, "checkout", "--quiet", "master")


def refused(func, code, pattern, *args, **kwargs):
    """Assert ``func`` raises ReleaseError with ``code`` and message."""
    with pytest.raises(ReleaseError) as info:
        func(*args, out=lambda line: None, **kwargs)
    assert info.value.code == code, str(info.value)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert isinstance(info.value, Core4UserError)
    assert "\n" not in str(info.value)
    return info.value


def heads(where):
    return git(where, "for-each-ref", "--format=%(refname:short)",
               "refs/heads/")


def test_build_and_release(repo):
    commit(repo)
    lines = []
    assert build(str(repo), "minor", out=lines.append) == "0.1.0"
    assert any("pushed release-0.1.0" in line for line in lines)
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "release-0.1.0"
    assert "release-0.1.0" in heads(repo).split()
    assert "release-0.1.0" in heads(origin(repo)).split()
    text = git(origin(repo), "show", "release-0.1.0:mypro/__init__.py")
    assert '__version__ = "0.1.0"' in text
    assert re.search(r'__built__ = "\d{4}-\d\d-\d\dT[\d:]+\+00:00"', text)
    assert 'title = "my project"' in text
    assert git(repo, "log", "-1", "--format=%s") == "bump release-0.1.0"
    assert git(repo, "status", "--porcelain") == ""

    merge(repo, "release-0.1.0", "master", "develop")
    lines = []
    assert release(str(repo / "mypro"), out=lines.append) == "0.1.0"
    assert git(origin(repo), "tag", "--list") == "0.1.0"
    assert git(origin(repo), "cat-file", "-t", "0.1.0") == "tag"
    assert git(origin(repo), "tag", "-l", "--format=%(contents:subject)",
               "0.1.0") == "release 0.1.0"
    assert git(origin(repo), "rev-parse", "0.1.0^{commit}") == git(
        origin(repo), "rev-parse", "master")
    assert git(origin(repo), "rev-parse", "develop") == git(
        repo, "rev-parse", "develop")
    assert "release-0.1.0" not in heads(repo)
    assert "release-0.1.0" not in heads(origin(repo))

    # the next cycle: patch on top of the released 0.1.0
    git(repo, "checkout", "--quiet", "develop")
    commit(repo, "fix.py")
    assert build(str(repo), out=lines.append) == "0.1.1"
    git(repo, "checkout", "--quiet", "develop")
    git(repo, "branch", "-D", "release-0.1.1")
    assert build(str(repo), "major", out=lines.append) == "1.0.0"


def test_build_without_origin_and_single_quotes(repo):
    git(repo, "remote", "remove", "origin")
    commit(repo, "mypro/__init__.py", INIT.replace('"', "'").replace(
        "__built__ = None\n", ""))
    lines = []
    assert build(str(repo), "patch", out=lines.append) == "0.0.1"
    assert any("no remote 'origin'" in line for line in lines)
    text = (repo / "mypro" / "__init__.py").read_text()
    assert "__version__ = '0.0.1'" in text and "__built__" not in text


def test_not_a_project(repo, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    refused(build, 1, "not inside a git repository", str(plain))
    refused(release, 1, "not inside a git repository", str(plain))
    write(repo / "mypro" / "__init__.py", "__version__ = '0.0.0'\n")
    refused(build, 1, "no package .* declares __project__", str(repo))
    write(repo / "mypro" / "__init__.py", INIT)
    write(repo / "other" / "__init__.py", "__project__ = 'core4'\n")
    refused(build, 1, "several packages .*mypro, other", str(repo))


def test_build_refuses_pending_release(repo):
    commit(repo)
    build(str(repo), out=lambda line: None)
    git(repo, "checkout", "--quiet", "develop")
    commit(repo, "more.py")
    refused(build, 2, "release release-0.0.1 is pending", str(repo))


def test_release_refuses_without_pending_release(repo):
    git(repo, "checkout", "--quiet", "master")
    refused(release, 2, "no pending release", str(repo))


def test_build_refuses_off_develop(repo):
    commit(repo)
    git(repo, "checkout", "--quiet", "master")
    refused(build, 3, "not on branch develop \\(on master\\)", str(repo))


def test_release_refuses_off_master(repo):
    commit(repo)
    build(str(repo), out=lambda line: None)
    merge(repo, "release-0.0.1", "master", "develop")
    git(repo, "checkout", "--quiet", "develop")
    refused(release, 3, "not on branch master \\(on develop\\)", str(repo))


def test_refuses_dirty_tree(repo):
    commit(repo)
    write(repo / "scratch.txt", "wip\n")
    refused(build, 4, "working tree is not clean .*: scratch.txt\\)", str(repo))
    (repo / "scratch.txt").unlink()
    build(str(repo), out=lambda line: None)
    merge(repo, "release-0.0.1", "master", "develop")
    write(repo / "README.md", "changed\n")
    refused(release, 4, "working tree is not clean .*: README.md\\)", str(repo))


def test_build_refuses_nothing_new(repo):
    refused(build, 5, "no commits in master..develop", str(repo))


def test_build_refuses_released_version(repo):
    # 0.1.0 was released (tagged) but develop still says 0.0.0
    git(repo, "tag", "-a", "0.1.0", "-m", "release 0.1.0", "master")
    commit(repo)
    refused(build, 6, "new version 0.1.0 is not greater than the released "
            "tag 0.1.0", str(repo), part="minor")
    assert build(str(repo), "major", out=lambda line: None) == "1.0.0"


def test_build_refuses_version_below_master(repo):
    git(repo, "checkout", "--quiet", "master")
    commit(repo, "mypro/__init__.py", INIT.replace("0.0.0", "2.0.0"))
    git(repo, "checkout", "--quiet", "develop")
    commit(repo)
    refused(build, 6, "not greater than the version on master 2.0.0",
            str(repo), part="major")


def test_release_refuses_unmerged(repo):
    commit(repo)
    build(str(repo), out=lambda line: None)
    merge(repo, "release-0.0.1", "master")
    refused(release, 7, "release-0.0.1 is not merged into develop",
            str(repo))
    git(repo, "reset", "--quiet", "--hard", "origin/master")
    merge(repo, "release-0.0.1", "develop")
    refused(release, 7, "release-0.0.1 is not merged into master",
            str(repo))
    assert git(repo, "tag", "--list") == ""


def test_missing_identity_rolls_back(repo, monkeypatch):
    commit(repo)
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(key)
    git(repo, "config", "user.useConfigOnly", "true")
    refused(build, 8, "git has no user identity", str(repo))
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "develop"
    assert "release-" not in heads(repo)
    assert git(repo, "status", "--porcelain") == ""


def test_unknown_part(repo):
    refused(build, 1, "unknown version part 'huge'", str(repo), part="huge")


@pytest.mark.parametrize("layout", ["new", "old"])
def test_first_build_of_a_coco_init_project(tmp_path, ident, layout):
    """A project as ``coco --init`` makes it (its files and repository; no
    venv here) starts at 0.0.1: its first build makes release-0.0.2, as in
    the tutorial; build and release push to its origin, ``.repos`` itself
    (new) or ``.repos/mypro.git`` (made by older versions)."""
    from core4.project.create import make_repository, write_files
    work = tmp_path / "mypro"
    work.mkdir()
    quiet = lambda line: None  # noqa: E731
    write_files(str(work), "mypro", "My project", quiet)
    if layout == "old":
        bare = work / ".repos" / "mypro.git"
        git(tmp_path, "init", "--quiet", "--bare", "-b", "master", str(bare))
        git(tmp_path, "init", "--quiet", "-b", "master", str(work))
        git(work, "remote", "add", "origin", str(bare))
    make_repository(str(work), "mypro", quiet)
    bare = work / ".repos" / ("mypro.git" if layout == "old" else "")
    assert git(work, "remote", "get-url", "origin") == str(bare).rstrip("/")
    commit(work, "mypro/myjob.py", "x = 1\n")
    assert build(str(work), out=quiet) == "0.0.2"
    assert "release-0.0.2" in heads(bare).split()
    merge(work, "release-0.0.2", "master", "develop")
    assert release(str(work), out=quiet) == "0.0.2"
    assert git(bare, "tag", "--list") == "0.0.2"
    assert '__version__ = "0.0.2"' in git(bare, "show",
                                          "master:mypro/__init__.py")
