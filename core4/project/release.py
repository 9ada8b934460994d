"""Release management of core4 projects (``coco --build`` / ``--release``).

The projects follow git-flow like upstream core4: work happens on
``develop``; :func:`build` cuts a branch ``release-X.Y.Z`` from ``develop``
and bumps ``__version__``; the user merges that branch into ``master`` and
``develop`` (``git merge --no-ff``); :func:`release` then tags ``X.Y.Z`` on
``master``, pushes and deletes the release branch.

Every refusal raises :class:`ReleaseError` with one clear line and the exit
code of upstream core4 in :attr:`ReleaseError.code`.
"""

import datetime
import os
import re
import subprocess

from core4.error import Core4UserError

NOT_A_PROJECT = 1    # not a (valid) core4 project
PENDING = 2          # build: a release is pending; release: none pending
WRONG_BRANCH = 3     # build: not on develop; release: not on master
NOT_CLEAN = 4        # uncommitted or untracked files
NOTHING_NEW = 5      # no commits in master..develop
NO_INCREASE = 6      # new version not greater than the current/released one
NOT_MERGED = 7       # release branch not merged into master and develop
GIT_FAILED = 8       # git itself failed unexpectedly (not a refusal)

PARTS = ("major", "minor", "patch")
PROJECT = re.compile(r"""^__project__\s*=\s*(['"])core4\1""", re.M)
VERSION = re.compile(
    r"""^(__version__\s*=\s*)(['"])(\d+)\.(\d+)\.(\d+)\2""", re.M)
BUILT = re.compile(r"^__built__\s*=.*$", re.M)
TAG = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
RELEASE_BRANCH = re.compile(r"^release-(\d+)\.(\d+)\.(\d+)$")
IDENTITY_HINTS = ("tell me who you are", "auto-detect", "empty ident",
                  "no email was given", "no name was given")


class ReleaseError(Core4UserError):
    """A build or release was refused; :attr:`code` is the exit code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def _git(root, *args, check=True, what=None):
    """Run ``git args`` in ``root``; return stripped stdout.

    With ``check``, a non-zero exit raises :class:`ReleaseError` (code
    :data:`GIT_FAILED`) naming ``what`` failed and git's first error line;
    without it, return the :class:`subprocess.CompletedProcess`.
    """
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANG="C")
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True,
                              text=True, check=False, env=env)
    except FileNotFoundError:
        raise ReleaseError("git is not installed (not found on PATH)",
                           GIT_FAILED)
    except NotADirectoryError:
        raise ReleaseError("%s is not a directory" % root, NOT_A_PROJECT)
    if not check:
        return proc
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        if any(hint in err.lower() for hint in IDENTITY_HINTS):
            raise ReleaseError(
                "%s failed: git has no user identity; set user.name and "
                "user.email (git config) or GIT_AUTHOR_NAME/EMAIL and "
                "GIT_COMMITTER_NAME/EMAIL" % (what or "git commit"),
                GIT_FAILED)
        lines = [l for l in err.splitlines() if l.strip()]
        detail = lines[-1].strip() if lines else "exit code %d" % (
            proc.returncode)
        for line in lines:
            if line.startswith(("fatal:", "error:")):
                detail = line.strip()
                break
        raise ReleaseError("%s failed: %s" % (
            what or "git " + " ".join(args), detail), GIT_FAILED)
    return proc.stdout.strip()


def _branch_exists(root, name):
    return _git(root, "rev-parse", "--verify", "--quiet",
                "refs/heads/" + name, check=False).returncode == 0


def _project(path):
    """Return ``(root, package)`` of the core4 project at ``path``."""
    if not os.path.isdir(path):
        raise ReleaseError("%s is not a directory" % path, NOT_A_PROJECT)
    proc = _git(path, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise ReleaseError("not a core4 project: %s is not inside a git "
                           "repository" % os.path.abspath(path),
                           NOT_A_PROJECT)
    root = proc.stdout.strip()
    found = []
    for name in sorted(os.listdir(root)):
        init = os.path.join(root, name, "__init__.py")
        if name.startswith(".") or not os.path.isfile(init):
            continue
        with open(init, encoding="utf-8", errors="replace") as fh:
            if PROJECT.search(fh.read()):
                found.append(name)
    if not found:
        raise ReleaseError("not a core4 project: no package in %s declares "
                           "__project__ = \"core4\"" % root, NOT_A_PROJECT)
    if len(found) > 1:
        raise ReleaseError("not a core4 project: several packages declare "
                           "__project__ = \"core4\": %s" % ", ".join(found),
                           NOT_A_PROJECT)
    for branch in ("master", "develop"):
        if not _branch_exists(root, branch):
            raise ReleaseError("not a git-flow core4 project: branch %r "
                               "does not exist" % branch, NOT_A_PROJECT)
    return root, found[0]


def _pending(root):
    """Names of local release branches."""
    out = _git(root, "for-each-ref", "--format=%(refname:short)",
               "refs/heads/release-*")
    return [b for b in out.splitlines() if RELEASE_BRANCH.match(b)]


def _current_branch(root):
    proc = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD",
                check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _check_branch(root, wanted):
    branch = _current_branch(root)
    if branch != wanted:
        raise ReleaseError("not on branch %s (on %s): git checkout %s" % (
            wanted, branch or "a detached HEAD", wanted), WRONG_BRANCH)


def _check_clean(root):
    status = _git(root, "status", "--porcelain")
    if status:
        lines = status.splitlines()
        names = ", ".join(line.split(None, 1)[-1] for line in lines[:3]) + (
            ", ..." if len(lines) > 3 else "")
        raise ReleaseError("working tree is not clean (%d changed or "
                           "untracked file(s): %s): commit or stash first"
                           % (len(lines), names), NOT_CLEAN)


def _has_origin(root):
    return "origin" in _git(root, "remote").split()


def _fmt(version):
    return "%d.%d.%d" % version


def _released(root):
    """The highest version among the ``X.Y.Z`` tags, or None."""
    tags = [TAG.match(t) for t in _git(root, "tag", "--list").splitlines()]
    versions = [tuple(map(int, m.groups())) for m in tags if m]
    return max(versions) if versions else None


def build(path=".", part="patch", out=print):
    """Cut a release branch ``release-X.Y.Z`` from ``develop``.

    Checks, in order (exit code in brackets): a core4 project (1), no
    pending ``release-*`` branch (2), on ``develop`` (3), clean working tree
    (4), commits in ``master..develop`` (5), the bumped version is greater
    than the current one, the one on master and every released tag (6).
    Then creates the branch, rewrites ``__version__`` (and ``__built__``) in
    ``<package>/__init__.py``, commits "bump release-X.Y.Z" and pushes the
    branch with upstream to ``origin`` if that remote exists. Returns the
    new version ``"X.Y.Z"``; ``out`` receives progress lines.
    """
    if part not in PARTS:
        raise ReleaseError("unknown version part %r (one of %s)" % (
            part, ", ".join(PARTS)), NOT_A_PROJECT)
    root, package = _project(path)
    init = os.path.join(root, package, "__init__.py")
    pending = _pending(root)
    if pending:
        raise ReleaseError("release %s is pending: merge it into master and "
                           "develop and run coco --release" % pending[0],
                           PENDING)
    _check_branch(root, "develop")
    _check_clean(root)
    ahead = int(_git(root, "rev-list", "--count", "master..develop"))
    if ahead == 0:
        raise ReleaseError("nothing to release: no commits in "
                           "master..develop", NOTHING_NEW)
    with open(init, encoding="utf-8") as fh:
        source = fh.read()
    match = VERSION.search(source)
    if not match:
        raise ReleaseError("%s/__init__.py has no __version__ = \"X.Y.Z\"" %
                           package, NOT_A_PROJECT)
    current = tuple(int(g) for g in match.groups()[2:])
    index = PARTS.index(part)
    new = tuple(0 if i > index else v + (i == index)
                for i, v in enumerate(current))
    proc = _git(root, "show", "master:%s/__init__.py" % package, check=False)
    on_master = VERSION.search(proc.stdout) if proc.returncode == 0 else None
    bounds = [("current version", current)]
    if on_master:
        bounds.append(("version on master",
                       tuple(int(g) for g in on_master.groups()[2:])))
    released = _released(root)
    if released:
        bounds.append(("released tag", released))
    for label, bound in bounds:
        if new <= bound:
            raise ReleaseError("new version %s is not greater than the %s "
                               "%s" % (_fmt(new), label, _fmt(bound)),
                               NO_INCREASE)
    version = _fmt(new)
    branch = "release-" + version
    _git(root, "checkout", "-b", branch, "develop",
         what="creating branch " + branch)
    try:
        text = VERSION.sub(lambda m: "%s%s%s%s" % (
            m.group(1), m.group(2), version, m.group(2)), source, count=1)
        built = datetime.datetime.now(datetime.timezone.utc).replace(
            microsecond=0).isoformat()
        text = BUILT.sub('__built__ = "%s"' % built, text, count=1)
        with open(init, "w", encoding="utf-8") as fh:
            fh.write(text)
        _git(root, "add", "--", "%s/__init__.py" % package)
        _git(root, "commit", "-m", "bump " + branch, what="git commit")
    except BaseException:
        _git(root, "reset", "--hard", "--quiet", check=False)
        _git(root, "checkout", "--quiet", "develop", check=False)
        _git(root, "branch", "-D", branch, check=False)
        raise
    out("created branch %s with __version__ = %s" % (branch, version))
    if _has_origin(root):
        _git(root, "push", "--set-upstream", "origin", branch,
             what="pushing %s to origin (the branch exists locally; retry "
             "with: git push -u origin %s)" % (branch, branch))
        out("pushed %s to origin" % branch)
    else:
        out("no remote 'origin': %s not pushed" % branch)
    out("next: merge %s into master and develop (git merge --no-ff), then "
        "coco --release" % branch)
    return version


def release(path=".", out=print):
    """Finish the pending release: tag it on ``master``, push, clean up.

    Checks, in order (exit code in brackets): a core4 project (1), exactly
    one pending local ``release-X.Y.Z`` branch (2), on ``master`` (3), clean
    working tree (4), the release branch merged into ``master`` and
    ``develop`` (7), tag ``X.Y.Z`` not yet present (6). Then creates the
    annotated tag ``X.Y.Z`` ("release X.Y.Z") on master, pushes master,
    develop and the tag to ``origin`` (if it exists) and deletes the release
    branch locally and on origin. Returns the version ``"X.Y.Z"``.
    """
    root, _ = _project(path)
    pending = _pending(root)
    if not pending:
        raise ReleaseError("no pending release: run coco --build first",
                           PENDING)
    if len(pending) > 1:
        raise ReleaseError("several pending releases: %s (keep one)" %
                           ", ".join(pending), PENDING)
    branch = pending[0]
    version = branch[len("release-"):]
    _check_branch(root, "master")
    _check_clean(root)
    for target in ("master", "develop"):
        if _git(root, "merge-base", "--is-ancestor", branch, target,
                check=False).returncode != 0:
            raise ReleaseError("%s is not merged into %s: git checkout %s && "
                               "git merge --no-ff %s" % (
                                   branch, target, target, branch),
                               NOT_MERGED)
    if _git(root, "rev-parse", "--verify", "--quiet", "refs/tags/" + version,
            check=False).returncode == 0:
        raise ReleaseError("version %s is already released (tag exists)" %
                           version, NO_INCREASE)
    _git(root, "tag", "-a", version, "-m", "release " + version, "master",
         what="tagging " + version)
    out("tagged %s on master" % version)
    if _has_origin(root):
        _git(root, "push", "origin", "master", "develop",
             "refs/tags/%s" % version, what="pushing master, develop and tag "
             "%s to origin" % version)
        out("pushed master, develop and tag %s to origin" % version)
    else:
        out("no remote 'origin': nothing pushed")
    _git(root, "branch", "-d", branch, what="deleting branch " + branch)
    if _has_origin(root) and _git(root, "ls-remote", "--heads", "origin",
                                  "refs/heads/" + branch):
        _git(root, "push", "origin", "--delete", branch,
             what="deleting %s on origin" % branch)
    out("deleted branch %s; released %s" % (branch, version))
    return version
