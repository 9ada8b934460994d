"""Running the code examples of the documentation: collecting the code
blocks of a page, running them as a new user would, and comparing their
output (used by :mod:`tests.test_docs`, whose docstring gives the
conventions)."""

import contextlib
import doctest
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from core4.config.cascade import load_config
from core4.mongo.embedded import stop_server
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
def marked_processes(mark, token):
    """The live processes (but this one) whose environment has
    ``mark=token``: those a run started, however deep."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and \
                    proc.environ().get(mark) == token and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


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
#: a datetime's repr: naive, or UTC (as made, or as pymongo reads it back)
STAMP = re.compile(r"datetime\.datetime\([\d, ]+(?:tzinfo=(?:"
                   r"datetime\.timezone\.utc|"
                   r"FixedOffset\(datetime\.timedelta\(0\), 'UTC'\)))?\)")
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
        self._run_script(block, "py", [sys.executable])

    def run_bash(self, block):
        self._run_script(block, "sh", ["bash", "-e", "-o", "pipefail"])

    def _run_script(self, block, suffix, command):
        """Write the block to a file, run it with ``command``; it must exit
        with 0."""
        path = self.work / ("doc_%d.%s" % (block.line, suffix))
        path.write_text(block.text)
        result = self._run(block, command + [path.name])
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
        return marked_processes(MARK, self.token)


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
