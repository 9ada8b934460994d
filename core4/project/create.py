"""``coco --init NAME "DESCRIPTION"``: create a core4 project.

The project gets its files (never overwriting existing ones), a git
repository with the branches master and develop and, unless it already has
a remote, a bare origin in ``.repos/``; a ``.venv`` with core4 installed
from the core4 that runs the command (no download of core4) and the project
installed editable; and a link ``<folder.home>/NAME`` so that workers run
its jobs in that ``.venv``.
"""

import keyword
import os
import subprocess
import sys

import core4
from core4.error import Core4UserError
from core4.project.home import RESERVED

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
__version__ = "0.0.0"
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


def core4_source():
    """Return the source tree of the running core4 (to install it into a
    project's venv without a download)."""
    candidate = os.path.dirname(os.path.dirname(os.path.abspath(
        core4.__file__)))
    try:
        with open(os.path.join(candidate, "pyproject.toml")) as handle:
            if 'name = "core4"' in handle.read():
                return candidate
    except OSError:
        pass
    source = os.environ.get("CORE4_SOURCE")
    if source:
        return source
    raise Core4UserError("cannot find the source of the running core4 to "
                         "install it; set CORE4_SOURCE to a core4 checkout")


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
            handle.write(text.format(name=name, description=description))
        if template == "enter_env":
            os.chmod(path, 0o755)
        out("create   %s" % path)


def make_repository(root, name, out):
    """git init with master and develop; a bare origin in ``.repos`` unless
    the repository already has a remote."""
    fresh = not os.path.isdir(os.path.join(root, ".git"))
    if fresh:
        _git(root, "init", "-q", "-b", "master")
    _git(root, "add", "-A")
    if _git(root, "status", "--porcelain").strip():
        _git(root, "commit", "-q", "-m",
             "initial commit" if fresh else "core4 project files")
    branches = _git(root, "branch", "--list", "develop")
    if not branches.strip():
        _git(root, "branch", "develop")
    if not _git(root, "remote").strip():
        bare = os.path.join(root, ".repos", name + ".git")
        _run(["git", "init", "-q", "--bare", bare], root, "git init --bare")
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


def create_project(config, name, description, directory=".", yes=False,
                   out=print, ask=input):
    """Create the project ``name`` (see the module docstring); return its
    root directory."""
    check_name(name)
    description = (description or name).replace('"', "'")
    directory = os.path.abspath(directory)
    root = directory if os.path.basename(directory) == name \
        else os.path.join(directory, name)
    source = core4_source()
    out("core4 project %s: %s" % (name, description))
    out("in %s, with core4 from %s" % (root, source))
    if not yes and ask("type yes to create it: ").strip() != "yes":
        raise Core4UserError("project %s not created" % name)
    os.makedirs(root, exist_ok=True)
    write_files(root, name, description, out)
    make_repository(root, name, out)
    make_venv(root, source, out)
    link_home(config, root, name, out)
    out("done: source %s/enter_env to work on %s" % (root, name))
    return root
