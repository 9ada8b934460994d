#!/usr/bin/env python3
"""croll: install or upgrade a core4 project from a git repository::

    python3 croll.py PROJECT REPOSITORY[@REF]

Standard library only: runs with a bare ``python3`` that has no core4. The
project is installed into ``<home>/<project>/.venv`` together with core4
(taken from the core4 source tree this file sits in, or ``--core4``), where
``<home>`` is ``$CORE4_OPTION_folder__home`` or ``~/.core4``. Layout::

    <home>/<project>/.src/          git clone of REPOSITORY
    <home>/<project>/.venvs/<sha>/  one venv per installed commit
    <home>/<project>/.venv          symlink to the current .venvs/<sha>
    <home>/<project>/croll.json     what is installed (commit, ref, ...)

Running it again for the same commit does nothing; a failed upgrade leaves
the previous install in place. Exit codes: 0 ok, 1 failed install, 2 bad
input (project name, repository, ref, not a core4 project).
"""

import argparse
import ast
import datetime
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CORE4_SOURCE = Path(__file__).resolve().parent
HOME_VARIABLE = "CORE4_OPTION_folder__home"
MARKER = ".croll-complete"


class CrollError(Exception):
    """A failure reported as one ``croll: ...`` line with exit ``code``."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def core4_home():
    """The core4 home: ``$CORE4_OPTION_folder__home``, else ``~/.core4``."""
    home = os.environ.get(HOME_VARIABLE) or "~/.core4"
    return Path(os.path.expanduser(home)).resolve()


def split_repository(spec):
    """Split ``REPOSITORY[@REF]`` into ``(repository, ref or None)``.

    The ref follows the last ``@`` that is not the user part of a URL
    (``https://user@host/...``, ``ssh://git@host/...``) or of an scp-like
    ``git@host:path``. Local paths are made absolute.
    """
    if "://" in spec:
        slash = spec.find("/", spec.index("://") + 3)
        auth_end = len(spec) if slash < 0 else slash
    elif re.match(r"^[^/:]+:", spec):
        auth_end = spec.index(":")
    else:
        auth_end = 0
    at = spec.rfind("@", auth_end)
    repository, ref = (spec, None) if at < 0 else (spec[:at], spec[at + 1:])
    if not repository or ref == "" or (ref or "").startswith("-"):
        raise CrollError("bad repository %r: expected REPOSITORY[@REF]"
                         % spec, 2)
    if "://" not in repository and not re.match(r"^[^/:]+:", repository):
        repository = os.path.abspath(os.path.expanduser(repository))
    return repository, ref


def validate_project(name):
    """Raise unless ``name`` is a Python identifier usable as a package."""
    if not name.isidentifier() or name.startswith("_") or name == "core4":
        raise CrollError("bad project name %r: expected a Python identifier"
                         % name, 2)


def git(*args, cwd=None):
    """Run git (never prompting); return the CompletedProcess, unchecked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        return subprocess.run(["git"] + list(args), cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)
    except FileNotFoundError:
        raise CrollError("git not found on PATH") from None


def git_reason(proc):
    """One-line reason from a failed git command's stderr."""
    text = proc.stderr.strip()
    if re.search(r"does not appear to be a git repository|not found|"
                 r"does not exist|No such file", text):
        return "repository not found"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else "git exited with %d" % proc.returncode
    return re.sub(r"^(fatal|error): ", "", last)


def clone_or_fetch(repository, src):
    """Clone ``repository`` into ``src``, or fetch if ``src`` is its clone."""
    origin = src.is_dir() and git("remote", "get-url", "origin", cwd=src)
    if origin and origin.stdout.strip() == repository:
        print("fetching %s" % repository)
        proc = git("fetch", "--quiet", "--prune", "--force", "--tags",
                   "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=src)
        if proc.returncode:
            raise CrollError("cannot fetch %s: %s" % (
                repository, git_reason(proc)), 2)
        git("remote", "set-head", "origin", "--auto", cwd=src)
        return
    print("cloning %s" % repository)
    tmp = Path(tempfile.mkdtemp(prefix=".src-", dir=src.parent))
    os.chmod(tmp, 0o755)
    proc = git("clone", "--quiet", "--no-checkout", repository, str(tmp))
    if proc.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CrollError("cannot clone %s: %s" % (
            repository, git_reason(proc)), 2)
    if src.exists():
        shutil.rmtree(src)
    os.replace(tmp, src)


def resolve_ref(src, ref, repository):
    """Return the commit sha of ``ref`` (default: the remote's HEAD)."""
    if ref is None or ref == "HEAD":
        candidates = ["refs/remotes/origin/HEAD"]
    elif ref.startswith("refs/heads/"):
        candidates = ["refs/remotes/origin/" + ref[len("refs/heads/"):]]
    else:
        candidates = ["refs/remotes/origin/" + ref, "refs/tags/" + ref, ref]
    for name in candidates:
        proc = git("rev-parse", "--verify", "--quiet", name + "^{commit}",
                   cwd=src)
        if proc.returncode == 0:
            return proc.stdout.strip()
    raise CrollError("unknown ref %r in %s" % (ref or "HEAD", repository), 2)


def checkout(src, sha):
    """Check out ``sha`` in ``src`` (detached) and remove untracked files."""
    for args in (["-c", "advice.detachedHead=false", "checkout", "--quiet",
                  "--force", "--detach", sha], ["clean", "-qffdx"]):
        proc = git(*args, cwd=src)
        if proc.returncode:
            raise CrollError("cannot check out %s: %s" % (
                sha, git_reason(proc)))


def is_core4_project(src, project):
    """True if checkout ``src`` is a core4 project whose package is
    ``project``: a ``pyproject.toml`` or ``setup.py`` at the root and
    ``<project>/__init__.py`` declaring ``__project__ = "core4"``."""
    if not any((src / n).is_file() for n in ("pyproject.toml", "setup.py")):
        return False
    try:
        tree = ast.parse((src / project / "__init__.py").read_bytes())
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, "id", None) == "__project__" for t in node.targets):
            return getattr(node.value, "value", None) == "core4"
    return False


def read_json(path):
    """Return the JSON object in ``path``, or ``{}`` if missing or broken."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json(path, data):
    """Write ``data`` as JSON to ``path`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def venv_env():
    """Environment for a venv's python: no PYTHONPATH etc. leaking in."""
    return {k: v for k, v in os.environ.items() if k not in (
        "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}


def run_python(venv, *args):
    """Run ``<venv>/bin/python args``; return (returncode, output)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return 127, "no %s" % python
    proc = subprocess.run([str(python)] + list(args), cwd=str(venv),
                          env=venv_env(), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    return proc.returncode, proc.stdout


def last_line(output):
    """The most telling line of a failed pip/python run's output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if "[end of output]" in lines:  # a failed build: its own last line
        index = len(lines) - 1 - lines[::-1].index("[end of output]")
        lines = lines[:index]
    noise = ("note:", "hint:", "[notice]", "WARNING:", "INFO:", "╰─>", "│",
             "ERROR: Exception:")
    for line in reversed(lines):
        if not line.startswith(noise):
            return line
    return lines[-1] if lines else "(no output)"


def imports(venv, project):
    """Return (ok, output) of ``import core4, PROJECT`` in ``venv``."""
    code, output = run_python(venv, "-c", "import core4, %s" % project)
    return code == 0, output


def pip_install(venv, name, target, log):
    """``pip install target`` into ``venv``; raise with pip's last line."""
    code, output = run_python(venv, "-m", "pip", "install", target)
    if code:
        log.write_text(output, encoding="utf-8")
        raise CrollError("pip install failed for %s: %s" % (
            name, last_line(output)))


def core4_target(option):
    """Return what pip installs core4 from: ``--core4`` or this tree."""
    if option:
        path = Path(os.path.expanduser(option))
        return str(path.resolve()) if path.exists() else option
    if not ((CORE4_SOURCE / "pyproject.toml").is_file()
            and (CORE4_SOURCE / "core4" / "__init__.py").is_file()):
        raise CrollError("no core4 source tree at %s; use --core4"
                         % CORE4_SOURCE, 2)
    return str(CORE4_SOURCE)


def build_venv(venv, python, project, src, core4, log):
    """Create ``venv`` and install core4 and the project into it."""
    print("creating %s" % venv)
    proc = subprocess.run([python, "-m", "venv", str(venv)],
                          env=venv_env(), capture_output=True, text=True)
    if proc.returncode:
        raise CrollError("cannot create venv %s: %s" % (
            venv, last_line(proc.stdout + proc.stderr)))
    print("installing core4 from %s" % core4)
    pip_install(venv, "core4", core4, log)
    print("installing %s from %s" % (project, src))
    pip_install(venv, project, str(src), log)
    ok, output = imports(venv, project)
    if not ok:
        raise CrollError("%s does not import after install: %s" % (
            project, last_line(output)))
    write_json(venv / MARKER, {"core4": core4})


def swap_link(link, target):
    """Point symlink ``link`` at ``target`` atomically."""
    tmp = link.with_name("%s.tmp-%d" % (link.name, os.getpid()))
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def prune_venvs(venvs, keep):
    """Delete every venv in ``venvs`` whose path is not in ``keep``."""
    keep = {Path(path).resolve() for path in keep if path}
    for path in venvs.iterdir():
        if path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)


def install(project, spec, core4=None, python=None, force=False):
    """Install or upgrade ``project`` from ``spec`` (``REPOSITORY[@REF]``).

    Returns the exit code; raises :class:`CrollError` on failure.
    """
    validate_project(project)
    repository, ref = split_repository(spec)
    python = python or sys.executable
    base = core4_home() / project
    fresh = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    try:
        with open(base / ".croll.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print("waiting for another croll of %s" % project)
                fcntl.flock(lock, fcntl.LOCK_EX)
            return _install(base, project, repository, ref, core4, python,
                            force)
    except BaseException:
        if fresh and not (base / "croll.json").exists():
            shutil.rmtree(base, ignore_errors=True)
        raise


def _install(base, project, repository, ref, core4, python, force):
    src, venvs, link = base / ".src", base / ".venvs", base / ".venv"
    state_path, log = base / "croll.json", base / "croll-pip.log"
    if link.exists() and not link.is_symlink():
        raise CrollError("%s is not a symlink made by croll; move it away"
                         % link)
    clone_or_fetch(repository, src)
    sha = resolve_ref(src, ref, repository)
    checkout(src, sha)
    if not is_core4_project(src, project):
        raise CrollError("%s is not a core4 project named %s" % (
            repository, project), 2)
    state = read_json(state_path)
    live = link.resolve() if link.is_symlink() and link.exists() else None
    if (not force and state.get("commit") == sha and live
            and imports(live, project)[0]):
        print("%s is up to date at %s" % (project, sha))
        return 0
    venvs.mkdir(exist_ok=True)
    venv = venvs / sha
    marker = read_json(venv / MARKER)
    if (not force and venv != live and marker
            and imports(venv, project)[0]):
        print("reusing %s" % venv)
        core4 = marker.get("core4")
    else:
        core4 = core4_target(core4)
        if venv == live:
            stamp = datetime.datetime.now(datetime.timezone.utc)
            venv = venvs / ("%s-%s" % (sha, stamp.strftime("%Y%m%d%H%M%S")))
        shutil.rmtree(venv, ignore_errors=True)  # a failed attempt's leftovers
        try:
            build_venv(venv, python, project, src, core4, log)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
    swap_link(link, venv)
    now = datetime.datetime.now(datetime.timezone.utc)
    write_json(state_path, {
        "project": project, "repository": repository, "ref": ref,
        "commit": sha, "installed_at": now.isoformat(timespec="seconds"),
        "core4": core4, "python": str(link / "bin" / "python"),
        "venv": str(venv)})
    prune_venvs(venvs, [venv, live])
    print("installed %s at %s into %s" % (project, sha, link))
    return 0


def main(argv=None):
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="croll.py", description="Install or upgrade a core4 project "
        "from a git repository into <home>/PROJECT/.venv together with "
        "core4. <home> is $%s, else ~/.core4." % HOME_VARIABLE,
        epilog="Running it again for the installed commit does nothing. A "
        "failed upgrade leaves the previous install in place; pip's output "
        "is then in <home>/PROJECT/croll-pip.log. Exit codes: 0 ok, 1 "
        "failed install, 2 bad input.")
    parser.add_argument("project", metavar="PROJECT",
                        help="the project's package (a Python identifier)")
    parser.add_argument("repository", metavar="REPOSITORY[@REF]",
                        help="any git URL or path (file:// included), with "
                        "an optional @branch, @tag or @commit (default: the "
                        "remote's default branch)")
    parser.add_argument("--core4", metavar="PATH_OR_PIP_SPEC",
                        help="install core4 from here (default: the source "
                        "tree croll.py is in: %s)" % CORE4_SOURCE)
    parser.add_argument("--python", help="interpreter for the venv (default: "
                        "the one running croll.py)")
    parser.add_argument("--force", action="store_true",
                        help="reinstall even if the commit is installed")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    try:
        return install(args.project, args.repository, core4=args.core4,
                       python=args.python, force=args.force)
    except (CrollError, OSError, KeyboardInterrupt) as exc:
        print("croll: %s" % (exc or "interrupted"), file=sys.stderr)
        return getattr(exc, "code", 1)


if __name__ == "__main__":
    sys.exit(main())
