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
import contextlib
import doctest
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from core4.config import Connect
from core4.config.cascade import load_config, package_defaults
from core4.mongo.embedded import stop_server
from core4.queue.job import CoreJob, RUNTIME_FIELDS
from core4.queue.validate import EMPTY, PROPERTIES
from core4.script import chist, coco

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
BIN = os.path.dirname(sys.executable)

#: pages whose blocks are not collected yet, each with the reason (remove
#: an entry once the page follows the conventions above)
NOT_COLLECTED = {}

#: what a page's home links to, so that it looks like a checkout of the
#: repository after ``scripts/run``
CHECKOUT = {".venv": os.path.dirname(BIN), "scripts": str(ROOT / "scripts"),
            "bench": str(ROOT / "bench"), "croll.py": str(ROOT / "croll.py")}

#: seconds one block may run
BLOCK_TIMEOUT = 45
#: pages run at the same time
PARALLEL = 4
#: pages that take longest (started first)
SLOW = ("docs/cli.rst", "docs/quickstart.rst", "README.rst")
#: environment variable marking the processes of one page run
MARK = "CORE4_DOCS_RUN"


# --- collecting code blocks ------------------------------------------------

class Block:
    """One code block of a page."""

    def __init__(self, page, line, lang, text, caption=None, marker=None,
                 reason=None):
        self.page = page
        self.line = line
        self.lang = lang
        self.text = text
        self.caption = caption
        self.marker = marker
        self.reason = reason

    @property
    def where(self):
        return "%s:%d" % (self.page, self.line)

    def __repr__(self):
        return "<%s %s%s>" % (self.lang, self.where,
                              " " + self.marker if self.marker else "")


DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S*)"
                       r"\s*$")
MARKER = re.compile(r"^(\s*)\.\. (not-executed|output):\s*(.*?)\s*$")
OPTION = re.compile(r"^\s+:([\w-]+):\s*(.*?)\s*$")


def _indent(line):
    return len(line) - len(line.lstrip())


def _body(lines, start, indent):
    """The indented block starting at ``start`` (after blank lines), deeper
    than ``indent``: ``(first line index, dedented text, end index)``."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    first = i
    body = []
    while i < len(lines) and (not lines[i].strip()
                              or _indent(lines[i]) > indent):
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
    if not body:
        return first, "", i
    cut = min(_indent(line) for line in body if line.strip())
    return first, "\n".join(line[cut:] for line in body) + "\n", i


def parse_blocks(path, name):
    """Return the code blocks of the rst file ``path`` (shown as ``name``)."""
    lines = path.read_text().splitlines()
    blocks = []
    pending = None          # (marker, reason, line index)
    i = 0
    while i < len(lines):
        line = lines[i]
        found = MARKER.match(line)
        if found:
            if pending:
                raise AssertionError("%s:%d: two markers in a row" % (
                    name, i + 1))
            reason, start = found.group(3), i
            i += 1
            while i < len(lines) and lines[i].strip() and \
                    _indent(lines[i]) > len(found.group(1)):
                reason += " " + lines[i].strip()     # the comment goes on
                i += 1
            pending = (found.group(2), reason.strip(), start)
            if pending[0] == "not-executed" and not pending[1]:
                raise AssertionError("%s:%d: not-executed needs a reason" % (
                    name, start + 1))
            continue
        directive = DIRECTIVE.match(line)
        if directive:
            indent = _indent(line)
            lang = directive.group(2) or "python"
            options = {}
            i += 1
            while i < len(lines) and OPTION.match(lines[i]):
                key, value = OPTION.match(lines[i]).groups()
                options[key] = value
                i += 1
            first, text, i = _body(lines, i, indent)
            blocks.append(Block(name, first + 1, lang, text,
                                options.get("caption"),
                                pending and pending[0],
                                pending and pending[1]))
            pending = None
            continue
        stripped = line.rstrip()
        if stripped.endswith("::") and not stripped.lstrip().startswith(
                ".."):
            first, text, end = _body(lines, i + 1, _indent(line))
            if text:
                blocks.append(Block(name, first + 1, "bash", text, None,
                                    pending and pending[0],
                                    pending and pending[1]))
                pending = None
                i = end
                continue
        if pending and line.strip() and not _paragraph_to_literal(lines, i):
            raise AssertionError("%s:%d: marker %s is not followed by a code "
                                 "block" % (name, pending[2] + 1, pending[0]))
        i += 1
    if pending:
        raise AssertionError("%s:%d: marker %s at the end" % (
            name, pending[2] + 1, pending[0]))
    return blocks


def _paragraph_to_literal(lines, i):
    """True if the paragraph at line ``i`` ends with ``::``."""
    while i < len(lines) and lines[i].strip():
        if lines[i].rstrip().endswith("::"):
            return True
        i += 1
    return False


def pages():
    """The pages whose code blocks are run: ``(name, path)``."""
    found = [(str(path.relative_to(ROOT)), path)
             for path in sorted(DOCS.rglob("*.rst"))
             if "_build" not in path.parts]
    found.append(("README.rst", ROOT / "README.rst"))
    return [(name, path) for name, path in found
            if name not in NOT_COLLECTED]


# --- comparing output ------------------------------------------------------

OID = re.compile(r"\b[0-9a-f]{24}\b")
STAMP = re.compile(r"datetime\.datetime\([\d, ]+(?:tzinfo=datetime\.timezone"
                   r"\.utc)?\)")
TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?"
                  r"(?:Z|[+-]\d\d:\d\d)?")
DURATION = re.compile(r"\b(?:\d+d )?\d\d:\d\d:\d\d\b")
LOOPBACK = re.compile(r"127\.0\.0\.1:\d+")
PID = re.compile(r"\bpid \d+")


def normalise(text):
    """The text with ids, times and layout made comparable."""
    text = OID.sub("<id>", text)
    text = LOOPBACK.sub("127.0.0.1:<port>", text)
    text = PID.sub("pid <pid>", text)
    text = STAMP.sub("<time>", text)
    text = TIME.sub("<time>", text)
    text = DURATION.sub("<duration>", text)
    text = re.sub(r"-{3,}", "---", text)
    text = re.sub(r"[ \t]+", " ", text)
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines) + "\n"


def matches(want, got):
    """True if output ``got`` matches the documented ``want``."""
    return doctest.OutputChecker().check_output(
        normalise(want), normalise(got), doctest.ELLIPSIS)


def mismatch(want, got):
    return "expected:\n%s\ngot:\n%s" % (_indent_text(want),
                                        _indent_text(got))


def _indent_text(text, limit=60):
    lines = text.rstrip("\n").splitlines()
    if len(lines) > limit:
        lines = lines[:10] + ["[... %d lines ...]" % (len(lines) - limit)] + \
            lines[-(limit - 10):]
    return "\n".join("    | " + line for line in lines)


# --- checking commands that are not run ------------------------------------

PARSERS = {"coco": coco.build_parser, "chist": chist.build_parser}


def commands(text):
    """The ``coco``/``chist`` command lines in a shell text: argv lists."""
    found = []
    text = text.replace("\\\n", " ")
    for line in text.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        current = None
        for token in tokens:
            if token in ("&&", "||", ";", "|", "&"):
                current = None
            elif token in PARSERS:
                current = [token]
                found.append(current)
            elif current is not None:
                current.append(token)
    return found


def check_syntax(argv):
    """Return an error text if the parser of ``argv[0]`` rejects it."""
    parser = PARSERS[argv[0]]()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv[1:])
    except SystemExit as exc:
        if exc.code:
            return "%s: %s" % (" ".join(argv), err.getvalue().strip())
    return None


# --- running a page --------------------------------------------------------

class PageRun:
    """Runs the blocks of one page in its own directory, home and
    database; collects the failures."""

    def __init__(self, name, path, base):
        self.name = name
        self.path = path
        slug = re.sub(r"\W+", "_", name)
        self.dir = base / slug
        self.home = self.dir / "home"
        self.work = self.home
        self.home.mkdir(parents=True)
        for name in CHECKOUT:
            os.symlink(CHECKOUT[name], self.home / name)
        self.token = uuid.uuid4().hex
        self.env = self._environment()
        self.failures = []
        self.ran = []
        self.skipped = []
        self.last_output = None

    def _environment(self):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("CORE4_", "PYTHON", "VIRTUAL_ENV",
                                      "GIT_", "LC_", "COLUMNS"))}
        env.update({
            "HOME": str(self.home),
            "USER": "mra",
            "LOGNAME": "mra",
            "LANG": "C.UTF-8",
            "COLUMNS": "80",
            "PATH": BIN + os.pathsep + env.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "CORE4_OPTION_worker__max_cpu": "!!int 100",
            MARK: self.token,
        })
        return env

    def scrub(self, text):
        """Output as on the documented machine: home and host name."""
        text = text.replace(str(self.home), "/home/mra")
        text = text.replace(str(ROOT), "/home/mra/core4")
        host = re.escape(socket.gethostname())
        text = re.sub(r"@%s\b" % host, "@host1", text)
        return re.sub(r"'%s'" % host, "'host1'", text)

    def fail(self, block, message):
        self.failures.append("%s (%s): %s" % (block.where, block.lang,
                                              message))

    def run(self):
        self.started = time.monotonic()
        try:
            for block in parse_blocks(self.path, self.name):
                self.run_block(block)
        except Exception as exc:  # a broken page is one failure
            self.failures.append("%s: %s: %s" % (self.name,
                                                 type(exc).__name__, exc))
        finally:
            self.cleanup()
            self.elapsed = time.monotonic() - self.started
        return self

    def run_block(self, block):
        if block.marker == "not-executed":
            self.skipped.append(block)
            for argv in commands(block.text) if block.lang in (
                    "bash", "console") else []:
                problem = check_syntax(argv)
                if problem:
                    self.fail(block, problem)
            return
        if block.marker == "output":
            if self.last_output is None:
                self.fail(block, "output of what? no block ran before it")
            elif not matches(block.text, self.last_output):
                self.fail(block, mismatch(block.text, self.last_output))
            self.last_output = None
            return
        self.last_output = None
        if block.lang == "text":
            return              # not code: a usage line, a format
        if block.caption and re.fullmatch(r"[\w~./-]+", block.caption) \
                and block.lang in ("python", "yaml"):
            self.write_file(block)
            return
        runner = getattr(self, "run_" + block.lang, None)
        if runner is None:
            self.fail(block, "language %r is neither run nor marked: use "
                      "python, bash, console, yaml or text, or mark it "
                      "with '.. not-executed: REASON'" % block.lang)
            return
        self.ran.append(block)
        runner(block)

    def write_file(self, block):
        target = block.caption.replace("~", str(self.home), 1) \
            if block.caption.startswith("~") else block.caption
        path = Path(target)
        if not path.is_absolute():
            path = self.work / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text)
        self.ran.append(block)
        if block.lang == "python":
            try:
                compile(block.text, str(path), "exec")
            except SyntaxError as exc:
                self.fail(block, "syntax error: %s" % exc)

    def _run(self, block, argv):
        """Run ``argv`` for ``block``; return ``(exit code, output)``, or
        None after a timeout. Output goes to a file, not a pipe: a process
        the block leaves in the background must not hold the test up."""
        out_path = self.dir / ("out_%d.txt" % block.line)
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=self.work, env=self.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(BLOCK_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
                code = None
        text = self.scrub(out_path.read_bytes().decode("utf-8", "replace"))
        if code is None:
            self.fail(block, "timed out after %d s\n%s" % (
                BLOCK_TIMEOUT, _indent_text(text)))
            return None
        return code, text

    def run_python(self, block):
        path = self.work / ("doc_%d.py" % block.line)
        path.write_text(block.text)
        result = self._run(block, [sys.executable, path.name])
        if result is None:
            return
        code, self.last_output = result
        if code != 0:
            self.fail(block, "exit code %d\n%s" % (
                code, _indent_text(self.last_output)))

    def run_bash(self, block):
        path = self.work / ("doc_%d.sh" % block.line)
        path.write_text(block.text)
        result = self._run(block, ["bash", "-e", "-o", "pipefail",
                                   path.name])
        if result is None:
            return
        code, self.last_output = result
        if code != 0:
            self.fail(block, "exit code %d\n%s" % (
                code, _indent_text(self.last_output)))

    def run_console(self, block):
        steps = transcript(block.text)
        if not steps:
            self.fail(block, "a console block without '$ ' commands")
            return
        script = ["exec 2>&1", "__rc=0"]
        for number, (command, _) in enumerate(steps):
            script.append("printf '\\n@@%d@@\\n'; (exit $__rc); %s" % (
                number, command))
            script.append("__rc=$?")
        path = self.work / ("doc_%d.sh" % block.line)
        path.write_text("\n".join(script) + "\n")
        result = self._run(block, ["bash", path.name])
        if result is None:
            return
        output = result[1]
        parts = re.split(r"(?:^|\n)@@(\d+)@@\n", output)
        outputs = {int(parts[k]): parts[k + 1]
                   for k in range(1, len(parts) - 1, 2)}
        for number, (command, want) in enumerate(steps):
            got = outputs.get(number)
            if got is None:
                self.fail(block, "$ %s did not run\n%s" % (
                    command, _indent_text(output)))
                return
            if not matches(want, got):
                self.fail(block, "$ %s\n%s" % (command, mismatch(want, got)))
        self.last_output = output

    def run_yaml(self, block):
        path = self.dir / ("doc_%d.yaml" % block.line)
        path.write_text(block.text)
        try:
            load_config(local_file=str(path), environ={})
        except Exception as exc:
            self.fail(block, "invalid configuration: %s" % exc)

    def cleanup(self):
        """Stop the embedded server; wait for other processes of the page
        to end, kill what is left."""
        data = self.home / ".core4" / "mongo"
        if data.is_dir():
            stop_server(str(data))
        deadline = time.monotonic() + 10
        left = self.processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.processes()
        for proc in left:
            self.failures.append("%s: process left running: %s" % (
                self.name, " ".join(proc.cmdline())[:200]))
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass

    def processes(self):
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.pid != os.getpid() and \
                        proc.environ().get(MARK) == self.token and \
                        proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
        return found


def transcript(text):
    """``[(command, expected output)]`` of a console transcript. A command
    goes on in lines that start with ``> `` (bash's second prompt) and in
    the line after a trailing ``\\``."""
    steps = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while i + 1 < len(lines) and (
                    lines[i + 1].startswith("> ") or command.endswith("\\")):
                i += 1
                more = lines[i]
                command += "\n" + (more[2:] if more.startswith("> ")
                                   else more)
            steps.append([command, ""])
        elif steps:
            steps[-1][1] += line + "\n"
        i += 1
    return [tuple(step) for step in steps]


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
