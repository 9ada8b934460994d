"""The documentation builds, its reference pages are complete, and every
code example in it runs and prints what it says.

* ``test_sphinx_build`` runs ``sphinx-build -W --keep-going -b html docs``
  (warnings are errors) and expects exit code 0.
* ``test_reference_*`` fail when a ``coco`` or ``chist`` option, a
  ``CoreJob`` property or a key of ``core4/core4.yaml`` exists in the code but
  not in ``docs/reference/`` (with the default the code has), or the other
  way round.
* ``test_examples[PAGE]`` runs every code block of ``PAGE`` (each page of
  ``docs/`` and ``README.rst``).

How code blocks are treated
===========================

``.. code-block:: python``
    Written to ``doc_<line>.py`` in the page's directory and run with the
    python of ``.venv``; it must exit with 0.
``.. code-block:: bash`` and ``::`` literal blocks
    Run with ``bash -e -o pipefail``; must exit with 0.
``.. code-block:: console``
    A transcript: every ``$ command`` runs, all in one bash, and what it
    prints (stdout and stderr) must match the lines below it, up to the
    next ``$``. A command goes on in lines that start with ``> `` and after
    a trailing ``\\``.
``.. code-block:: yaml``
    Loaded as a local configuration file: it must be valid.
``.. code-block:: text``
    Not run (usage lines, formats, sketches). After the comment
    ``.. output:`` it is the expected output of the block before it.
``:caption: FILE``
    A ``python`` or ``yaml`` block whose caption is a file name (no blanks)
    is written to FILE (``~`` is the page's home) instead of being run;
    later blocks use it.
``.. not-executed: REASON``
    The next block is not run. ``coco`` and ``chist`` commands in it are
    still checked against the real argument parsers. Keep these rare.

Any other language is an error, so every block is either run or marked.
Expected output is compared after normalising ObjectIds, dates and times,
durations, ports on 127.0.0.1, ``pid N``, runs of blanks and of ``-``
(table rules); ``...`` matches any text, also several lines (doctest's
ELLIPSIS).

Each page runs as a new user would run it: in a fresh, empty ``HOME``
(also the working directory of its blocks) with no configuration, so
``~/.core4`` is the page's core4 home and core4 starts the embedded
NX-27017 server in ``~/.core4/mongo`` on demand (database ``core4``). The
user is ``mra`` (``USER``/``LOGNAME``), the locale ``C.UTF-8``, the
terminal 80 columns wide, ``.venv/bin`` comes first on ``PATH``, and
``worker.max_cpu`` is 100 (``CORE4_OPTION_worker__max_cpu``: the test
machine is busy by design, see ``tests/support.py``). The home links
``.venv``, ``scripts``, ``bench`` and ``croll.py`` of the repository, so
that commands "from a checkout" work in it. In output, the page's home
reads ``/home/mra``, the repository ``/home/mra/core4`` and this host's
name ``host1``.

The blocks of a page run in order and share home, database and background
processes (``coco --worker &``). At the end of the page its embedded server
is stopped; any other process of the page still running then is killed and
fails the page. Pages run concurrently, and so does the Sphinx build.
"""

import concurrent.futures
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from core4.config import Connect
from core4.config.cascade import package_defaults
from core4.queue.job import CoreJob, RUNTIME_FIELDS
from core4.queue.validate import EMPTY, PROPERTIES
from tests.docexamples import (DOCS, PARALLEL, PARSERS, REFERENCE, ROOT,
                               SLOW, PageRun, pages)

# --- the tests -------------------------------------------------------------

PAGES = pages()


def sphinx_build(outdir):
    """Build the html documentation with warnings as errors."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
         "html", str(DOCS), str(outdir)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)


def _selected(request, test):
    return [item for item in request.session.items
            if getattr(item, "originalname", None) == test]


@pytest.fixture(scope="module")
def background(request):
    """The selected pages and the Sphinx build, run concurrently (slow
    pages first): ``{page name or "sphinx": future}``."""
    wanted = {item.callspec.params["name"]
              for item in _selected(request, "test_examples")}
    base = Path(tempfile.mkdtemp(prefix="core4-docs-"))
    pool = concurrent.futures.ThreadPoolExecutor(PARALLEL + 1)
    futures = {}
    if _selected(request, "test_sphinx_build"):
        futures["sphinx"] = pool.submit(sphinx_build, base / "html")
    order = sorted(PAGES, key=lambda page: page[0] not in SLOW)
    for name, path in order:
        if name in wanted:
            futures[name] = pool.submit(PageRun(name, path, base).run)
    yield futures
    pool.shutdown(wait=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("name", [name for name, _ in PAGES])
def test_examples(background, name):
    run = background[name].result()
    assert not run.failures, "\n\n".join(run.failures)


def test_sphinx_build(background):
    proc = background["sphinx"].result()
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the reference pages ---------------------------------------------------

def _options(page, program):
    """The option strings of ``.. option::`` directives after
    ``.. program:: PROGRAM`` (up to the next ``.. program::``)."""
    found = set()
    current = None
    for line in page.read_text().splitlines():
        directive = re.match(r"^\.\. program:: (\S+)", line)
        if directive:
            current = directive.group(1)
            continue
        option = re.match(r"^\s*\.\. option:: (.+)$", line)
        if option and current == program:
            for part in option.group(1).split(", "):
                found.add(part.split()[0])
    return found


@pytest.mark.parametrize("program", sorted(PARSERS))
def test_reference_cli_options(program):
    """Every option of coco and chist is in docs/reference/cli.rst, and
    every option there exists."""
    parser = PARSERS[program]()
    code = {string for action in parser._actions
            for string in action.option_strings}
    documented = _options(REFERENCE / "cli.rst", program)
    assert not code - documented, "%s options missing in docs/reference/" \
        "cli.rst: %s" % (program, sorted(code - documented))
    assert not documented - code, "docs/reference/cli.rst documents %s " \
        "options that do not exist: %s" % (program,
                                           sorted(documented - code))


def _yaml_default(value):
    """How docs/reference/config.rst writes a default of core4.yaml."""
    if value is None:
        return "~"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Connect):
        return "!connect mongodb://%s%s" % (
            value.database + "/" if value.database else "", value.collection)
    return str(value)


def _leaves(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + key + ".")
        else:
            yield prefix + key, value


def test_reference_config_keys():
    """Every key of core4/core4.yaml is in docs/reference/config.rst with
    its default, and every key there exists."""
    text = (REFERENCE / "config.rst").read_text()
    rows = dict(re.findall(r"^\s*\* - ``([\w.]+)``\s*\n\s*- ``(.*)``\s*$",
                           text, re.MULTILINE))
    code = dict(_leaves(package_defaults()))
    missing = sorted(set(code) - set(rows))
    assert not missing, "keys missing in docs/reference/config.rst: %s" % (
        missing,)
    extra = sorted(set(rows) - set(code))
    assert not extra, "docs/reference/config.rst documents keys that are " \
        "not in core4.yaml: %s" % (extra,)
    wrong = ["%s: %s, not %s" % (key, _yaml_default(code[key]), rows[key])
             for key in code if rows[key] != _yaml_default(code[key])]
    assert not wrong, "wrong defaults in docs/reference/config.rst: %s" % (
        wrong,)


def _attributes(text):
    """``{name: (options, fields)}`` of the ``.. py:attribute::
    CoreJob.NAME`` directives."""
    found = {}
    blocks = re.split(r"^(?=\.\. py:attribute:: )", text, flags=re.MULTILINE)
    for block in blocks:
        head = re.match(r"\.\. py:attribute:: CoreJob\.(\w+)\n", block)
        if not head:
            continue
        body = re.split(r"\n(?=\S)", block)[0]     # up to the next paragraph
        options = dict(re.findall(r"^   :(\w+): (.*)$", body, re.MULTILINE))
        fields = {}
        for name, value in re.findall(
                r"^   :([A-Z][\w ]*): (.*(?:\n {12}.*)*)", body,
                re.MULTILINE):
            fields[name] = " ".join(value.split())
        found[head.group(1)] = (options, fields)
    return found


def test_reference_job_properties():
    """Every CoreJob property is in docs/reference/job.rst with its default,
    where it can be set, whether it is inherited and stored."""
    text = (REFERENCE / "job.rst").read_text()
    documented = _attributes(text)
    job_defaults = package_defaults()["job"]
    problems = []
    for name, prop in PROPERTIES.items():
        if name not in documented:
            problems.append("%s: missing" % name)
            continue
        options, fields = documented[name]
        default = job_defaults[name] if name in job_defaults else EMPTY[name]
        if options.get("value") != repr(default):
            problems.append("%s: value %s, not %r" % (
                name, options.get("value"), default))
        default_field = fields.get("Default", "")
        if not default_field.startswith("``%r``" % (default,)):
            problems.append("%s: Default %r does not start with ``%r``" % (
                name, default_field, default))
        if name in job_defaults and "``job.%s``" % name not in default_field:
            problems.append("%s: Default does not name job.%s" % (name,
                                                                  name))
        where = fields.get("Set as", "")
        expected = {"class attribute": True, "configuration": prop.config,
                    "enqueue keyword": prop.enqueue}
        for place, allowed in expected.items():
            if (place in where) != allowed:
                problems.append("%s: Set as %r %s %s" % (
                    name, where, "lacks" if allowed else "must not name",
                    place))
        for field, flag in (("Inherited", prop.inherited),
                            ("Stored", prop.stored)):
            value = fields.get(field, "")
            if value.split(" ")[0] != ("yes" if flag else "no"):
                problems.append("%s: %s %r, not %s" % (
                    name, field, value, "yes" if flag else "no"))
    if "author" not in documented:
        problems.append("author: missing")
    real = set(PROPERTIES) | {"author", "name", "args"} | set(dir(CoreJob))
    for name in set(documented) - real:
        problems.append("%s: documented, but not an attribute of CoreJob" %
                        name)
    assert not problems, "docs/reference/job.rst:\n" + "\n".join(problems)


def test_reference_job_fields_and_members():
    """Every runtime field of a job document and every public member of
    CoreJob is in docs/reference/job.rst."""
    text = (REFERENCE / "job.rst").read_text()
    fields = set(re.findall(r"^\s*\* - ``(\w+)``\s*$", text, re.MULTILINE))
    missing = sorted(set(RUNTIME_FIELDS) - fields)
    assert not missing, "runtime fields missing in the table of " \
        "docs/reference/job.rst: %s" % missing
    documented = set(_attributes(text))
    for match in re.finditer(r":members: ([\w,\s]+?)\n\n", text):
        documented.update(name.strip() for name in
                          match.group(1).split(",") if name.strip())
    public = {name for name in dir(CoreJob) if not name.startswith("_")}
    missing = sorted(public - documented)
    assert not missing, "CoreJob members missing in docs/reference/job.rst " \
        "(as py:attribute or in the autoclass :members:): %s" % missing
