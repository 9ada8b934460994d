#!/usr/bin/env python3
"""croll.py: install or upgrade core4, or a core4 project, from git.

  python3 croll.py core4 REPOSITORY[@REF]     ./core4, core4's environment
  python3 croll.py PROJECT REPOSITORY[@REF]   <folder.home>/PROJECT

Standard library only: runs with a bare python3, also when fetched alone.
"core4" makes ./core4 a venv with core4 installed editable from its
checkout ./core4/.src (". core4/bin/activate" puts coco on the PATH); run
again, it upgrades it in place. A PROJECT goes to <folder.home>/PROJECT/:
.src (checkout), .venvs/<sha> (one venv per commit, with core4), .venv
(symlink to the current one), croll.json. A project's .repos folder holding
PROJECT.git (older coco --init) means that repository. <folder.home>/PROJECT
linked by coco --init (a development project) is refused, untouched.

folder.home is read like coco reads it: $CORE4_OPTION_folder__home, else the
local file ($CORE4_CONFIG, else ~/.core4/local.yaml, else
/etc/core4/local.yaml), else ~/.core4. Without core4 importable, a minimal
parser reads the local file: a block-style "folder:" with an indented
"home: VALUE" (plain or quoted, # comments); no flow style, anchors or
multi-line values. core4 goes into a project's venv from --core4, else the
core4 tree croll.py is in, else the environment ./core4, else the active one.

Run again for the installed commit, it does nothing; a failed upgrade keeps
the previous install (pip's output: croll-pip.log next to croll.json).
Exit codes: 0 ok, 1 failed install, 2 bad input or refused.
"""

import argparse
import contextlib
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
CONFIG_VARIABLE = "CORE4_CONFIG"
LOCAL_FILES = ("~/.core4/local.yaml", "/etc/core4/local.yaml")
RESERVED = ("mongo", "data")
MARKER = ".croll-complete"
#: environment for a venv's python: no PYTHONPATH etc. leaking in
VENV_ENV = {k: v for k, v in os.environ.items() if k not in (
    "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")}
#: what croll keeps in <home>/<project>; anything else is not croll's
OWN = (".src", ".venvs", ".venv", "croll.json", "croll-pip.log",
       ".croll.lock")
#: git variables that would point git at another repository
GIT_LOCAL = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX",
             "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
             "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CONFIG_PARAMETERS",
             "GIT_CONFIG_COUNT")
#: git's boilerplate after the real reason of a failed clone or fetch
GIT_NOISE = re.compile(r"(Could not read from remote repository|Please make "
                       r"sure you have the correct access|and the repository "
                       r"exists|Cloning into|warning: )")


class CrollError(Exception):
    """A failure reported as one ``croll: ...`` line with exit ``code``."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def tilde(path):
    """``path`` as a string, with the user's home directory shown as ``~``."""
    path, user = str(path), os.path.expanduser("~")
    if user not in ("", "/") and (path + "/").startswith(user + "/"):
        return "~" + path[len(user):]
    return path


def yaml_scalar(raw):
    """A plain or quoted YAML scalar without comment; None for ``~``/empty."""
    raw = raw.strip()
    if raw[:1] in ("'", '"'):
        end = raw.find(raw[0], 1)
        return raw[1:end] if end > 0 else raw[1:]
    value = re.split(r"\s#", raw, maxsplit=1)[0].strip()
    return None if value in ("", "~", "null", "Null", "NULL") else value


def read_folder_home(path):
    """``folder.home`` in the YAML file ``path``, or None (minimal parser:
    block-style ``folder:`` with an indented ``home: VALUE``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CrollError("%s: cannot read configuration file: %s" % (
            path, exc), 2) from None
    in_folder, indent = False, None
    for line in text.splitlines():
        body = line.rstrip()
        if not body.strip() or body.lstrip().startswith("#"):
            continue
        depth = len(body) - len(body.lstrip())
        if depth == 0:
            in_folder = re.match(r"folder\s*:\s*(#.*)?$", body) is not None
            indent = None
        elif in_folder:
            indent = indent or depth
            found = depth == indent and re.match(r"\s*home\s*:(\s.*)?$", body)
            if found:
                return yaml_scalar(found.group(1) or "")
    return None


def local_file():
    """The local configuration file coco reads, or None."""
    named = os.environ.get(CONFIG_VARIABLE)
    if named and not os.path.isfile(named):
        raise CrollError("%s=%s: configuration file not found" % (
            CONFIG_VARIABLE, named), 2)
    found = [named] if named else [path for path in map(
        os.path.expanduser, LOCAL_FILES) if os.path.isfile(path)]
    return found[0] if found else None


def core4_home():
    """Return ``(folder.home as an absolute Path, where it is set)``."""
    option, path = yaml_scalar(os.environ.get(HOME_VARIABLE, "")), local_file()
    configured = path and read_folder_home(path)
    home, source = ((option, "$" + HOME_VARIABLE) if option else
                    (configured, path) if configured else
                    ("~/.core4", "core4's default"))
    try:
        from core4.config.cascade import load_config
    except ImportError:  # a bare python: the minimal reader above it is
        load_config = None
    if load_config is not None:
        try:
            home = load_config().folder.home or home
        except Exception as exc:  # Core4ConfigurationError: one line
            raise CrollError("configuration: %s" % " ".join(
                str(exc).split()), 2) from None
    return Path(os.path.abspath(os.path.expanduser(home))), tilde(source)


def split_repository(spec):
    """Split ``REPOSITORY[@REF]`` into ``(repository, ref or None)``: the
    ref follows the last ``@`` not in a URL's user part (``ssh://git@host``,
    ``git@host:path``). Local paths are made absolute."""
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


def candidates(repository, project):
    """``repository``, and for a ``.repos`` folder (as older ``coco --init``
    made it) the ``.repos/<project>.git`` inside."""
    found = [repository]
    if re.search(r"(^|/)\.repos/?$", repository):
        found.append(repository.rstrip("/") + "/%s.git" % project)
    return found


def validate_project(name):
    """Raise unless ``name`` is a Python identifier usable as a package."""
    if not name.isidentifier() or name.startswith("_"):
        raise CrollError("bad project name %r: expected a Python identifier"
                         % name, 2)
    if name in RESERVED:
        raise CrollError("project name %r is reserved" % name, 2)


def git(*args, cwd=None):
    """Run git (never prompting); return the CompletedProcess, unchecked."""
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCAL}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        return subprocess.run(["git"] + list(args), cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)
    except FileNotFoundError:
        raise CrollError("git not found on PATH") from None


def git_reason(proc):
    """One-line reason from a failed git command's stderr: git's (or ssh's)
    own first line, without the boilerplate that follows it."""
    lines = [re.sub(r"^(fatal|error): ", "", line.strip())
             for line in proc.stderr.splitlines()]
    lines = [line for line in lines if line and not GIT_NOISE.match(line)]
    if re.search(r"does not appear to be a git repository|[Rr]epository "
                 r".*(not found|does not exist)", "\n".join(lines)):
        return "repository not found"
    return lines[0] if lines else "git exited with %d" % proc.returncode


def clone_or_fetch(repositories, src):
    """Fetch into ``src`` if it is a clone of one of ``repositories``, else
    clone the first that can be cloned; return the repository used."""
    origin = src.is_dir() and git("remote", "get-url", "origin", cwd=src)
    if origin and origin.stdout.strip() in repositories:
        repository = origin.stdout.strip()
        print("fetching %s" % repository)
        proc = git("fetch", "--quiet", "--prune", "--force", "--tags",
                   "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=src)
        if proc.returncode:
            raise CrollError("cannot fetch %s: %s" % (
                repository, git_reason(proc)), 2)
        git("remote", "set-head", "origin", "--auto", cwd=src)
        return repository
    tmp = Path(tempfile.mkdtemp(prefix=".src-", dir=src.parent))
    try:
        reason = None
        for repository in repositories:
            print("cloning %s" % repository)
            proc = git("clone", "--quiet", "--no-checkout", repository,
                       str(tmp / "clone"))
            if proc.returncode == 0:
                break
            reason = reason or git_reason(proc)
        else:
            raise CrollError("cannot clone %s: %s" % (
                repositories[0], reason), 2)
        shutil.rmtree(src, ignore_errors=True)
        os.replace(tmp / "clone", src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return repository


def resolve_ref(src, ref, repository):
    """Return the commit sha of ``ref`` (default: the remote's HEAD, else
    its master or main)."""
    if ref is None or ref == "HEAD":
        names = ["refs/remotes/origin/" + name
                 for name in ("HEAD", "master", "main")]
    elif ref.startswith("refs/heads/"):
        names = ["refs/remotes/origin/" + ref[len("refs/heads/"):]]
    else:
        names = ["refs/remotes/origin/" + ref, "refs/tags/" + ref, ref]
    for name in names:
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
    """True if checkout ``src`` has a ``pyproject.toml`` or ``setup.py`` and
    ``<project>/__init__.py`` declaring ``__project__ = "core4"``."""
    try:
        text = (src / project / "__init__.py").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(re.search(r"""^__project__\s*=\s*['"]core4['"]""", text, re.M)
                and any((src / n).is_file()
                        for n in ("pyproject.toml", "setup.py")))


def is_core4_tree(path):
    """True if ``path`` is a source tree of core4 itself."""
    try:
        text = (path / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(re.search(r'^name\s*=\s*["\']core4["\']', text, re.M)
                and (path / "core4" / "__init__.py").is_file())


def check_project_dir(base):
    """Refuse, without writing anything, a ``<home>/<project>`` that croll
    did not make (the ``coco --init`` link or any other directory)."""
    if base.is_symlink():
        raise CrollError("%s is your development project, linked by coco "
                         "--init; set folder.home for production installs"
                         % tilde(base), 2)
    if base.exists() and not (base / "croll.json").is_file() and not all(
            name in OWN or name.startswith(".src-")
            for name in os.listdir(base)):
        raise CrollError("%s is not an install made by croll.py (a "
                         "development project?); set folder.home for "
                         "production installs" % tilde(base), 2)


@contextlib.contextmanager
def claimed(base, name):
    """Hold ``base``'s lock; remove what a failed first install left."""
    fresh = not base.exists() or not os.listdir(base)
    base.mkdir(parents=True, exist_ok=True)
    try:
        with open(base / ".croll.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print("waiting for another croll of %s" % name)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    except BaseException:
        if fresh and not (base / "croll.json").exists():
            shutil.rmtree(base, ignore_errors=True)
        raise


def read_json(path):
    """Return the JSON object in ``path``, or ``{}`` if missing or broken."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path, data):
    """Write ``data`` as JSON to ``path`` atomically."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def run_python(venv, *args):
    """Run ``<venv>/bin/python args``; return (returncode, output)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return 127, "no %s" % python
    proc = subprocess.run([str(python)] + list(args), cwd=str(venv),
                          env=VENV_ENV, stdin=subprocess.DEVNULL,
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


def imports(venv, *modules):
    """Return (ok, output) of ``import MODULES`` in ``venv``."""
    code, output = run_python(venv, "-c", "import " + ", ".join(modules))
    return code == 0, output


def pip_install(venv, name, args, log):
    """``pip install ARGS`` into ``venv``; raise with pip's last line."""
    code, output = run_python(venv, "-m", "pip", "install", *args)
    if code:
        log.write_text(output, encoding="utf-8")
        raise CrollError("pip install failed for %s: %s" % (
            name, last_line(output)))


def make_venv(venv, python):
    """``python -m venv venv``."""
    print("creating %s" % venv)
    proc = subprocess.run([python, "-m", "venv", str(venv)],
                          env=VENV_ENV, capture_output=True, text=True)
    if proc.returncode:
        raise CrollError("cannot create venv %s: %s" % (
            venv, last_line(proc.stdout + proc.stderr)))


def env_source(env):
    """core4's source tree in environment ``env`` (installed editable, as by
    ``croll.py core4``), else None."""
    code, out = run_python(env, "-I", "-c",
                           "import core4; print(core4.__file__)")
    lines = out.strip().splitlines() if code == 0 else []
    path = Path(lines[-1]).parent.parent if lines else None
    return path if path and is_core4_tree(path) else None


def core4_target(option):
    """What pip installs core4 from: ``--core4``, this file's source tree,
    the core4 environment ``./core4`` (or next to this file), or the active
    environment (``$VIRTUAL_ENV``)."""
    if option:
        path = Path(os.path.expanduser(option))
        return str(path.resolve()) if path.exists() else option
    if is_core4_tree(CORE4_SOURCE):
        return str(CORE4_SOURCE)
    envs = [Path.cwd() / "core4", CORE4_SOURCE / "core4"]
    if os.environ.get("VIRTUAL_ENV"):
        envs.append(Path(os.environ["VIRTUAL_ENV"]))
    for env in envs:
        source = (env / "pyvenv.cfg").is_file() and env_source(env)
        if source:
            return str(source)
    raise CrollError("no core4 to install with the project: run croll.py "
                     "where 'croll.py core4 URL@REF' made ./core4, activate "
                     "a core4 environment, or use --core4", 2)


def install_core4(spec, python, force):
    """Create or upgrade ``./core4``: a venv with core4 installed editable
    from its checkout ``./core4/.src``; returns the exit code."""
    repository, ref = split_repository(spec)
    env = Path.cwd() / "core4"
    if env.is_symlink() or (env.exists() and os.listdir(env) and read_json(
            env / "croll.json").get("project") != "core4"):
        raise CrollError("%s exists and is not a core4 environment made by "
                         "croll.py; run croll.py in another directory"
                         % tilde(env), 2)
    src, state_path = env / ".src", env / "croll.json"
    with claimed(env, "core4"):
        repository = clone_or_fetch([repository], src)
        sha = resolve_ref(src, ref, repository)
        state = read_json(state_path)
        if (not force and state.get("commit") == sha and (
                env / "bin" / "coco").exists() and imports(env, "core4")[0]):
            print("core4 is up to date at %s" % sha)
            return 0
        checkout(src, sha)
        try:
            if not is_core4_tree(src):
                raise CrollError("%s is not core4's repository"
                                 % repository, 2)
            if not (env / "bin" / "python").exists():
                make_venv(env, python)
            print("installing core4 from %s (editable)" % src)
            # compat: .src on sys.path, so that core4 is a regular package
            # even where the cwd holds ./core4 (and coco --init finds it)
            pip_install(env, "core4", ["--config-settings",
                                       "editable_mode=compat", "-e", str(src)],
                        env / "croll-pip.log")
        except BaseException:
            if state.get("commit"):  # the previous code back in place
                with contextlib.suppress(CrollError):
                    checkout(src, state["commit"])
            raise
        now = datetime.datetime.now(datetime.timezone.utc)
        write_json(state_path, {
            "project": "core4", "repository": repository, "ref": ref,
            "commit": sha, "installed_at": now.isoformat(timespec="seconds"),
            "python": str(env / "bin" / "python"), "source": str(src)})
    print("installed core4 at %s into %s" % (sha, env))
    print("activate it with: . %s/bin/activate" % os.path.relpath(env))
    return 0


def build_venv(venv, python, project, src, core4, log):
    """Create ``venv`` and install core4 and the project into it."""
    make_venv(venv, python)
    print("installing core4 from %s" % core4)
    pip_install(venv, "core4", [core4], log)
    print("installing %s from %s" % (project, src))
    pip_install(venv, project, [str(src)], log)
    ok, output = imports(venv, "core4", project)
    if not ok:
        raise CrollError("%s does not import after install: %s" % (
            project, last_line(output)))
    write_json(venv / MARKER, {"core4": core4})


def swap_link(link, target):
    """Point symlink ``link`` at ``target`` atomically."""
    tmp = link.with_name("%s.tmp-%d" % (link.name, os.getpid()))
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def prune_venvs(venvs, keep):
    """Delete every venv in ``venvs`` whose path is not in ``keep``."""
    keep = {Path(path).resolve() for path in keep if path}
    for path in venvs.iterdir():
        if path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)


def install(project, spec, core4=None, python=None, force=False):
    """Install or upgrade ``project`` (``core4``: the environment
    ``./core4``) from ``spec``; return the exit code or raise CrollError."""
    python = python or sys.executable
    if project == "core4":
        return install_core4(spec, python, force)
    validate_project(project)
    repository, ref = split_repository(spec)
    home, source = core4_home()
    base = home / project
    check_project_dir(base)
    print("folder.home %s (from %s)" % (home, source))
    with claimed(base, project):
        return _install(base, project, candidates(repository, project), ref,
                        core4, python, force)


def _install(base, project, repositories, ref, core4, python, force):
    src, venvs, link = base / ".src", base / ".venvs", base / ".venv"
    state_path, log = base / "croll.json", base / "croll-pip.log"
    repository = clone_or_fetch(repositories, src)
    sha = resolve_ref(src, ref, repository)
    checkout(src, sha)
    if not is_core4_project(src, project):
        raise CrollError("%s is not a core4 project named %s" % (
            repository, project), 2)
    state = read_json(state_path)
    live = link.resolve() if link.is_symlink() and link.exists() else None
    if (not force and state.get("commit") == sha and live
            and imports(live, "core4", project)[0]):
        print("%s is up to date at %s" % (project, sha))
        return 0
    venvs.mkdir(exist_ok=True)
    venv = venvs / sha
    marker = read_json(venv / MARKER)
    if (not force and venv != live and marker
            and imports(venv, "core4", project)[0]):
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
        prog="croll.py", description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", metavar="PROJECT",
                        help="the project's package (a Python identifier), "
                        "or core4 for core4's environment ./core4")
    parser.add_argument("repository", metavar="REPOSITORY[@REF]",
                        help="a git URL or path (file://, ssh://, a project's "
                        ".repos), @branch, @tag or @commit (default: HEAD)")
    parser.add_argument("--core4", metavar="PATH_OR_PIP_SPEC",
                        help="install core4 into the project from here "
                        "(default: see above)")
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
