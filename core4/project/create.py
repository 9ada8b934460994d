"""``coco --init NAME "DESCRIPTION"``: create a core4 project.

The project gets its files (never overwriting existing ones), a git
repository with the branches master and develop and, unless it already has
a remote, a bare origin: ``.repos`` itself is that bare repository (older
versions made ``.repos/NAME.git``; such projects keep theirs); a ``.venv``
with core4 installed from where the running core4 came from (its source
tree, or the directory, archive or git URL pip installed it from; no
download of core4 from an index) and the project installed editable; and a
link ``<folder.home>/NAME`` so that workers run its jobs in that ``.venv``.

The first ``coco --init`` also writes ``~/.core4/local.yaml`` if there is
no local configuration yet (see :func:`write_local_config`).

It asks for confirmation only on a terminal; without one, ``yes`` must be
given (else a one-line error, before anything is created).
"""

import importlib.metadata
import json
import keyword
import os
import subprocess
import sys
import urllib.parse
import urllib.request

import core4
from core4.error import Core4UserError
from core4.project.home import RESERVED, is_core4_project

#: the version of a new project: its first ``coco --build`` makes 0.0.2
FIRST_VERSION = "0.0.1"
#: where a new project's bare origin lives (the repository itself)
REPOS = ".repos"

TEMPLATES = {
    "README.md": "# {name}\n\n{description}\n\nA core4 project. Start "
                 "working with `source enter_env`.\n",
    ".gitignore": ".venv/\n.repos/\n__pycache__/\n*.egg-info/\nbuild/\n"
                  "dist/\nlocal.yaml\n",
    "enter_env": "# source this file: activates the project's .venv and "
                 "changes into the project\n"
                 "cd \"$(dirname \"${{BASH_SOURCE[0]:-$0}}\")\" && "
                 "source .venv/bin/activate\n",
    "pyproject.toml": """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
dynamic = ["version"]
description = "{description}"
requires-python = ">=3.11"
# core4 itself is installed next to the project (coco --init, croll.py)
dependencies = []

[tool.setuptools.dynamic]
version = {{attr = "{name}.__version__"}}

[tool.setuptools.packages.find]
include = ["{name}*"]

[tool.setuptools.package-data]
{name} = ["*.yaml"]
""",
    "requirements.txt": "# the project's dependencies (mirror them in "
                        "pyproject.toml)\n",
    "{name}/__init__.py": '''"""{description}"""

__project__ = "core4"
__version__ = "{version}"
__built__ = None
name = "{name}"
title = "{name}"
description = "{description}"
''',
    "{name}/{name}.yaml": "# configuration of {name} (see core4's "
                          "core4.yaml)\nDEFAULT:\n  mongo_database: {name}\n",
    "tests/__init__.py": "",
}


def check_name(name):
    """Raise a user error unless ``name`` can be a project (a lower-case
    Python identifier that is neither a keyword nor reserved)."""
    if not (isinstance(name, str) and name.isidentifier()
            and not keyword.iskeyword(name) and name == name.lower()
            and not name.startswith("_")):
        raise Core4UserError("invalid project name %r: use a lower-case "
                             "Python identifier like 'mypro'" % (name,))
    if name in RESERVED or name == "core4":
        raise Core4UserError("project name %r is reserved" % name)


def _is_core4_tree(path):
    try:
        with open(os.path.join(path, "pyproject.toml")) as handle:
            return 'name = "core4"' in handle.read()
    except OSError:
        return False


def installed_from():
    """Where pip installed the running environment's core4 from (PEP 610
    ``direct_url.json``): a local directory or archive that still exists,
    a git URL (``git+URL@COMMIT``) or an archive URL; else None."""
    try:
        text = importlib.metadata.distribution("core4").read_text(
            "direct_url.json")
        info = json.loads(text or "null")
    except (importlib.metadata.PackageNotFoundError, OSError, ValueError):
        return None
    if not isinstance(info, dict) or not info.get("url"):
        return None
    url = info["url"]
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        return path if os.path.exists(path) else None
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        commit = vcs.get("commit_id") or vcs.get("requested_revision")
        return "%s+%s%s" % (vcs["vcs"], url, "@" + commit if commit else "")
    return url


def core4_source():
    """Return what to install core4 from into a project's venv: the
    source tree of the running core4, else where pip installed it from
    (see :func:`installed_from`: so ``coco --init`` works from a project's
    environment too), else ``$CORE4_SOURCE``. ``$CORE4_SOURCE`` set
    overrides all of them."""
    source = os.environ.get("CORE4_SOURCE")
    if source:
        return source
    candidate = os.path.dirname(os.path.dirname(os.path.abspath(
        core4.__file__)))
    if _is_core4_tree(candidate):
        return candidate
    found = installed_from()
    if found:
        return found
    raise Core4UserError("cannot tell where the running core4 (%s) was "
                         "installed from; set CORE4_SOURCE to a core4 "
                         "checkout" % os.path.dirname(core4.__file__))


def _run(cmd, cwd, what):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output")
        raise Core4UserError("%s failed: %s" % (what, last.splitlines()[-1]))
    return proc.stdout


def _git(root, *args, what=None):
    identity = []
    for key, value in (("user.name", "core4"),
                       ("user.email", "core4@localhost")):
        if subprocess.run(["git", "config", key], cwd=root,
                          capture_output=True).returncode != 0:
            identity += ["-c", "%s=%s" % (key, value)]
    return _run(["git", *identity, *args], root, what or "git " + args[0])


def write_files(root, name, description, out):
    """Write the project's files; existing files are kept."""
    for template, text in TEMPLATES.items():
        path = os.path.join(root, template.format(name=name))
        if os.path.exists(path):
            out("keep     %s (exists)" % path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text.format(name=name, description=description,
                                     version=FIRST_VERSION))
        if template == "enter_env":
            os.chmod(path, 0o755)
        out("create   %s" % path)


def origin_path(root, name):
    """Where a bare origin goes: ``.repos`` itself, unless ``.repos`` is a
    folder of an older project (holding ``NAME.git``, or other files)."""
    repos = os.path.join(root, REPOS)
    old = os.path.join(repos, name + ".git")
    if os.path.isdir(old) or (os.path.isdir(repos) and os.listdir(repos)
                              and not os.path.exists(os.path.join(repos,
                                                                  "HEAD"))):
        return old
    return repos


def _exclude_repos(root):
    """Keep ``.repos`` out of the working tree's git, whatever the
    project's .gitignore says."""
    exclude = os.path.join(root, ".git", "info", "exclude")
    try:
        with open(exclude) as handle:
            lines = handle.read().splitlines()
    except OSError:
        lines = []
    if "/%s/" % REPOS not in lines:
        os.makedirs(os.path.dirname(exclude), exist_ok=True)
        with open(exclude, "a") as handle:
            handle.write("/%s/\n" % REPOS)


def make_repository(root, name, out):
    """git init with master and develop; a bare origin (``.repos``, see
    :func:`origin_path`) unless the repository already has a remote."""
    fresh = not os.path.isdir(os.path.join(root, ".git"))
    if fresh:
        _git(root, "init", "-q", "-b", "master")
    _exclude_repos(root)
    _git(root, "add", "-A")
    if _git(root, "status", "--porcelain").strip():
        _git(root, "commit", "-q", "-m",
             "initial commit" if fresh else "core4 project files")
    branches = _git(root, "branch", "--list", "develop")
    if not branches.strip():
        _git(root, "branch", "develop")
    if not _git(root, "remote").strip():
        bare = origin_path(root, name)
        _run(["git", "init", "-q", "--bare", "-b", "master", bare], root,
             "git init --bare")
        _git(root, "remote", "add", "origin", bare)
        _git(root, "push", "-q", "-u", "origin", "master", "develop")
        out("create   %s (origin)" % bare)
    _git(root, "checkout", "-q", "develop")


def make_venv(root, source, out):
    """Create ``.venv`` with core4 from ``source`` and the project
    installed editable."""
    venv = os.path.join(root, ".venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        out("create   %s" % venv)
        _run([sys.executable, "-m", "venv", venv], root, "python -m venv")
    out("install  core4 from %s" % source)
    _run([python, "-m", "pip", "install", "-q",
          "--disable-pip-version-check", source], root, "pip install core4")
    out("install  the project (editable)")
    _run([python, "-m", "pip", "install", "-q",
          "--disable-pip-version-check", "-e", root], root,
         "pip install -e the project")
    return python


def link_home(config, root, name, out):
    """Link ``<folder.home>/NAME`` to the project (if free)."""
    link = os.path.join(config.folder.home, name)
    if os.path.lexists(link):
        if os.path.realpath(link) != os.path.realpath(root):
            out("keep     %s (exists: not linked to this project)" % link)
        return
    os.makedirs(config.folder.home, exist_ok=True)
    os.symlink(os.path.abspath(root), link)
    out("link     %s -> %s" % (link, root))


LOCAL_YAML = """\
# core4's local configuration, written by the first coco --init; core4 never
# changes it. It overrides the defaults of core4 (core4/core4.yaml) and of
# the projects (<project>/<project>.yaml); environment variables
# CORE4_OPTION_<section>__<key> override it. coco --who shows the file in use.

{database}
# Log records of this level and above go to sys_log (chist shows them) and
# to the terminal of workers and coco (~ turns a handler off):
#
# logging:
#   mongodb: {mongodb}
#   stderr: {stderr}
#
# The core4 home holds the installed projects ({home}/<project>) and
# the embedded database ({home}/mongo):
#
# folder:
#   home: {home}
"""

EMBEDDED_DATABASE = """\
# The database: the embedded NX-27017 server, started on demand under
# folder.home/mongo (coco --db shows, starts and stops it). To use your own
# MongoDB instead (a replica set in production), uncomment and adapt:
#
# DEFAULT:
#   mongo_url: mongodb://user:password@localhost:27017
#   mongo_database: {database}
"""

CONFIGURED_DATABASE = """\
# The database (configured when this file was written):
DEFAULT:
  mongo_url: {url}
  mongo_database: {database}
"""


def _tilde(path):
    home = os.path.expanduser("~")
    if path == home or path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return path


def local_config_text(config):
    """The text of a new ``~/.core4/local.yaml`` for ``config``: where
    mongo_url, logging and folder.home go; commented where they are the
    embedded database's (or the current) values, so it changes nothing."""
    connect = config.sys.queue
    if connect.url:
        database = CONFIGURED_DATABASE.format(
            url=json.dumps(connect.url), database=json.dumps(
                connect.database))
    else:
        database = EMBEDDED_DATABASE.format(database=connect.database)
    logging = config.logging
    return LOCAL_YAML.format(
        database=database, home=_tilde(config.folder.home),
        mongodb=logging.mongodb or "~", stderr=logging.stderr or "~")


def write_local_config(config, out):
    """Write ``~/.core4/local.yaml`` unless a local configuration exists
    (``$CORE4_CONFIG``, ``~/.core4/local.yaml``, ``/etc/core4/local.yaml``);
    return its path or None."""
    from core4.config.cascade import USER_LOCAL, local_path
    existing = local_path()
    if existing:
        return None
    path = os.path.expanduser(USER_LOCAL)
    text = local_config_text(config)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        out("skip     %s (%s)" % (path, exc.strerror or exc))
        return None
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    out("create   %s (the local configuration: mongo_url, logging, "
        "folder.home)" % path)
    return path


def existing_project(config, root, name):
    """Lines saying up front what of project ``name`` exists already."""
    lines = []
    if is_core4_project(os.path.join(root, name)):
        lines.append("project %s exists in %s: missing files are added, "
                     "existing ones kept, its .venv is updated" % (
                         name, root))
    elif os.path.isdir(root) and os.listdir(root):
        lines.append("directory %s exists: the project's files are added "
                     "to it, existing files are kept" % root)
    link = os.path.join(config.folder.home, name)
    if os.path.lexists(link) and os.path.realpath(link) != \
            os.path.realpath(root):
        lines.append("%s exists and is not this project (%s): it is kept, "
                     "and workers run that one" % (
                         link, os.path.realpath(link)))
    return lines


def confirm(name, yes, ask):
    """Ask to type yes (on a terminal) unless ``yes``."""
    if yes:
        return
    try:
        answer = ask("type yes to create it: ")
    except EOFError:
        answer = ""
    if answer.strip() != "yes":
        raise Core4UserError("project %s not created" % name)


def create_project(config, name, description, directory=".", yes=False,
                   out=print, ask=input, interactive=True):
    """Create the project ``name`` (see the module docstring); return its
    root directory. Without ``yes`` it asks, which needs ``interactive``
    (a terminal): else a user error before anything is done."""
    check_name(name)
    if not yes and not interactive:
        raise Core4UserError("coco --init asks before it creates a project, "
                             "but there is no terminal: add --yes")
    description = (description or name).replace('"', "'")
    directory = os.path.abspath(directory)
    root = directory if os.path.basename(directory) == name \
        else os.path.join(directory, name)
    source = core4_source()
    out("core4 project %s: %s" % (name, description))
    for line in existing_project(config, root, name):
        out(line)
    out("in %s, with core4 from %s" % (root, source))
    confirm(name, yes, ask)
    write_local_config(config, out)
    os.makedirs(root, exist_ok=True)
    write_files(root, name, description, out)
    make_repository(root, name, out)
    make_venv(root, source, out)
    link_home(config, root, name, out)
    out("done: source %s/enter_env to work on %s" % (root, name))
    return root
