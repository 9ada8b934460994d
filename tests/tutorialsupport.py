"""Running ``docs/tutorial.rst`` as a user would (used by
:mod:`tests.test_tutorial`, whose docstring gives the conventions).

The tutorial's code blocks are read from the page itself with the parser of
:mod:`tests.docexamples`, so the commands that run are the commands the page
shows. Each ``$ command`` of a console block runs in bash on a pseudo
terminal, like in the reader's terminal: what bash keeps between two
commands (the working directory, exported variables, functions such as the
``deactivate`` of an activated environment, ``$?``) carries over to the
next command. A program that asks (``coco --init``) gets the answer the
page shows after the question.
"""

import doctest
import fcntl
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import psutil

from core4.mongo.embedded import server_status, stop_server
from tests.docexamples import (OID, ROOT, marked_processes, mismatch,
                               normalise,
                               parse_blocks, transcript, _indent_text)

PAGE = ROOT / "docs" / "tutorial.rst"
NAME = "docs/tutorial.rst"
#: the reason every block of the page is marked ``.. not-executed:`` with
#: (test_docs skips the blocks; this module runs them)
REASON = "tests/test_tutorial.py runs the tutorial"
#: where the tutorial's user lives (HOME shows as this in outputs)
USER_HOME = "/home/mra"
#: seconds one command may run
COMMAND_TIMEOUT = 300
#: environment variable marking every process of the tutorial run
MARK = "CORE4_TUTORIAL_RUN"
#: a terminal's ANSI escape sequences (colours, cursor movement)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")
#: git commit ids, full or abbreviated (never 24 digits: those are ids)
#: (one in a hundred short commit ids has no letter: only a digit is asked)
SHA = re.compile(r"\b(?=[0-9a-f]*\d)(?:[0-9a-f]{40}|[0-9a-f]{7,12})\b")
#: a version of Python or core4 in an output
VERSION = re.compile(r"\b(python|core4) \d+\.\d+[\w.]*")


# --- reading the page ------------------------------------------------------

class Step:
    """One thing the reader does: run a ``command`` (and see ``expected``),
    save a file (``path`` with ``text``) or look at one (``check``: the
    file ``path`` reads ``text``)."""

    def __init__(self, block, command=None, expected=None, path=None,
                 text=None, line=None, check=False):
        self.block = block
        self.check = check
        self.line = line or block.line
        self.command = command
        self.expected = expected
        self.path = path
        self.text = text

    @property
    def where(self):
        return "%s:%d" % (self.block.page, self.line)

    def __repr__(self):
        return "<%s %s>" % (self.where, self.command or self.path)


def steps(path=PAGE, name=NAME):
    """The steps of the tutorial page, in order. Every block must be marked
    ``.. not-executed:`` with :data:`REASON` and be a console transcript, a
    file to save (``python`` or ``yaml`` with a file name as caption), a
    file to look at (``text`` with a file name as caption) or other
    ``text`` (not run)."""
    found = []
    for block in parse_blocks(Path(path), name):
        if block.marker != "not-executed" or REASON not in (block.reason or
                                                            ""):
            raise AssertionError(
                "%s: every block of the tutorial is marked '.. not-executed: "
                "%s ...' (test_docs must not run it; test_tutorial does)"
                % (block.where, REASON))
        if block.lang == "console":
            pairs = transcript(block.text)
            if not pairs:
                raise AssertionError("%s: a console block without '$ ' "
                                     "commands" % block.where)
            lines = block.text.splitlines()
            index = 0
            for command, expected in pairs:
                first = "$ " + command.splitlines()[0]
                index = lines.index(first, index)
                found.append(Step(block, command, expected,
                                  line=block.line + index))
        elif block.lang in ("python", "yaml", "text") and block.caption \
                and re.fullmatch(r"[\w~./-]+", block.caption):
            found.append(Step(block, path=block.caption, text=block.text,
                              check=block.lang == "text"))
        elif block.lang != "text":
            raise AssertionError(
                "%s: a %s block in the tutorial: use console ('$ ' "
                "commands and their output), python, yaml or text with a "
                "file name as caption, or text" % (block.where, block.lang))
    return found


# --- comparing output ------------------------------------------------------

def comparable(text):
    """``text`` normalised like the doc examples, plus commit ids and the
    versions of Python and core4."""
    text = SHA.sub("<sha>", text)
    text = VERSION.sub(r"\1 <version>", text)
    return normalise(text)


def matches(want, got):
    """True if output ``got`` matches the page's ``want``."""
    return doctest.OutputChecker().check_output(
        comparable(want), comparable(got), doctest.ELLIPSIS)


# --- a pseudo terminal -----------------------------------------------------

def run_on_terminal(argv, cwd, env, timeout, answers=()):
    """Run ``argv`` with stdin, stdout and stderr on a new pseudo terminal
    (80x24) in a process group of its own; type the rest of an ``answers`` line
    when the output stops at its beginning (a question). Return ``(exit
    code or None after a timeout, output)``; output has ``\\n`` line ends
    and no ANSI escapes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        # a process group of its own, but no session: the terminal must not
        # become the controlling terminal of the step's bash, whose end
        # would hang up what the step leaves running (a worker)
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave,
                                stdout=slave, stderr=slave, process_group=0,
                                close_fds=True)
    finally:
        os.close(slave)
    data = b""
    answered = set()
    last = time.monotonic()
    deadline = last + timeout
    ended = None
    try:
        while True:
            ready = select.select([master], [], [], 0.05)[0]
            chunk = b""
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:     # EIO: every writer closed the terminal
                    chunk = None
            if chunk:
                data += chunk
                last = time.monotonic()
                continue
            now = time.monotonic()
            if proc.poll() is not None:
                ended = ended or now
                if chunk is None or now - ended > 0.3:
                    break
                continue
            if now > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return None, clean(data)
            if now - last > 0.3:
                line = clean(data).rsplit("\n", 1)[-1]
                for index, answer in enumerate(answers):
                    if index not in answered and line.strip() and \
                            answer.startswith(line) and answer != line:
                        os.write(master, (answer[len(line):] + "\n").encode())
                        answered.add(index)
                        last = now
                        break
    finally:
        os.close(master)
    return proc.returncode, clean(data)


def clean(data):
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    return ANSI.sub("", text.replace("\r", ""))


# --- the user's session ----------------------------------------------------

class Session:
    """The reader's terminal in a fresh ``home``: runs the steps in order,
    collects the failures."""

    def __init__(self, base, home, env, timeout=COMMAND_TIMEOUT):
        self.base = base
        self.home = home
        self.timeout = timeout
        self.token = uuid.uuid4().hex
        self.env = dict(env, **{MARK: self.token})
        self.state = base / "shell-state.sh"
        self.state.write_text("cd %s\n" % shlex.quote(str(home)))
        self.cwd = home
        self.rc = 0
        self.ids = {}           # an id the page shows -> the real one
        self.failures = []
        self.ran = []
        self.count = 0

    # the shell -------------------------------------------------------------

    SAVE = """
__rc=$?
{{ export -p
   for __v in $(compgen -v _OLD_VIRTUAL_); do declare -p "$__v"; done
   declare -f
   printf 'cd %q\\n' "$PWD"
}} > {state}.new 2>/dev/null && mv {state}.new {state}
pwd > {state}.cwd
exit $__rc
"""

    def shell(self, command, answers=()):
        """Run ``command`` in bash as the next line typed into the
        terminal; return ``(exit code or None, output)``."""
        self.count += 1
        script = self.base / ("step_%03d.sh" % self.count)
        state = shlex.quote(str(self.state))
        script.write_text(". %s\n(exit %d)\n%s\n%s" % (
            state, self.rc, command, self.SAVE.format(state=state)))
        code, output = run_on_terminal(["bash", str(script)], str(self.cwd),
                                       self.env, self.timeout, answers)
        cwd = Path(str(self.state) + ".cwd")
        if cwd.exists():
            self.cwd = Path(cwd.read_text().strip() or self.home)
        if code is not None:
            self.rc = code
        return code, output

    def scrub(self, text):
        """Output as on the tutorial's machine: the home, the host name."""
        text = text.replace(str(self.home), USER_HOME)
        host = re.escape(socket.gethostname())
        text = re.sub(r"@%s\b" % host, "@host1", text)
        return re.sub(r"'%s'" % host, "'host1'", text)

    # the steps -------------------------------------------------------------

    def fail(self, step, message):
        self.failures.append("%s: %s%s" % (step.where, message, self.logs()))

    def logs(self, lines=30):
        """The last lines of the logs in the home (``~/worker.log``)."""
        found = []
        for path in sorted(self.home.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            found.append("\n%s:\n%s" % (
                self.scrub(str(path)), _indent_text(self.scrub(
                    "\n".join(text)))))
        return "".join(found)

    def run(self, all_steps):
        """Run ``all_steps``; stop at the first command that fails (exit
        code) unless the page checks it with ``echo $?`` next."""
        for index, step in enumerate(all_steps):
            following = all_steps[index + 1] if index + 1 < len(all_steps) \
                else None
            if step.command is None:
                self.save(step)
                continue
            if not self.command(step, following):
                return False
        return True

    def save(self, step):
        """Save the file of ``step``, or compare it with the page."""
        path = step.path
        if path.startswith("~"):
            path = str(self.home) + path[1:]
        target = self.cwd / path
        if step.check:
            self.ran.append((step, None, "compared %s" % target))
            text = target.read_text() if target.is_file() else None
            if text is None:
                self.fail(step, "%s: no such file" % step.path)
            elif not matches(step.text, self.scrub(text)):
                self.fail(step, "%s:\n%s" % (step.path, mismatch(
                    step.text, self.scrub(text))))
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(step.text)
        self.ran.append((step, None, "saved %s" % target))

    def command(self, step, following):
        command = self.real_ids(step)
        if command is None:
            return False
        answers = [line for line in step.expected.splitlines()
                   if re.search(r"[:?] \S+$", line)]
        started = time.monotonic()
        code, output = self.shell(command, answers)
        output = self.scrub(output)
        self.ran.append((step, code, "%.1f s" % (time.monotonic() - started)))
        if code is None:
            self.fail(step, "$ %s\ntimed out after %d s\n%s" % (
                step.command, self.timeout, _indent_text(output)))
            return False
        checked = following is not None and following.command is not None \
            and following.command.strip() == "echo $?"
        if code != 0 and not checked:
            self.fail(step, "$ %s\nexit code %d\n%s" % (
                step.command, code, _indent_text(output)))
            return False
        if not matches(step.expected, output):
            self.fail(step, "$ %s\n%s" % (step.command,
                                          mismatch(step.expected, output)))
        else:
            self.learn_ids(step.expected, output)
        return True

    def learn_ids(self, expected, output):
        """The ids the page shows in ``expected`` are those in ``output``
        (in the same order)."""
        shown, real = OID.findall(expected), OID.findall(output)
        if shown and len(shown) == len(real):
            self.ids.update(zip(shown, real))

    def real_ids(self, step):
        """The step's command with the ids the page shows replaced by those
        the commands before it printed (the reader copies them)."""
        command = step.command
        for shown in OID.findall(command):
            if shown not in self.ids:
                self.fail(step, "$ %s\nthe id %s was not printed by an "
                          "earlier command" % (command, shown))
                return None
            command = command.replace(shown, self.ids[shown])
        return command

    # the end ---------------------------------------------------------------

    def processes(self):
        return marked_processes(MARK, self.token)

    def cleanup(self, complain=True):
        """Stop what the tutorial left running: the embedded database
        servers of the home and every process of the run. With
        ``complain``, each process left running is a failure."""
        for data in embedded_servers(self.home):
            status = server_status(str(data))
            if status and complain:
                self.failures.append("the embedded database %s was left "
                                     "running (pid %s)" % (
                                         data, status.get("pid")))
            stop_server(str(data))
        deadline = time.monotonic() + 10
        left = self.processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.processes()
        for proc in left:
            if complain:
                try:
                    line = " ".join(proc.cmdline())[:200]
                except psutil.Error:
                    line = str(proc.pid)
                self.failures.append("process left running: %s" % line)
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass

    def report(self):
        """What ran, with exit codes and times (for a failure message)."""
        return "\n".join("%s %s  [%s%s]" % (
            step.where, step.command or step.path,
            "" if code is None else "exit %d, " % code, note)
            for step, code, note in self.ran)


def embedded_servers(home):
    """Data directories of embedded servers below ``home`` (``mongo``
    folders with a server state, up to three levels down)."""
    found = []
    for folder, dirs, files in os.walk(home):
        depth = len(Path(folder).relative_to(home).parts)
        if Path(folder).name == "mongo" and depth <= 3:
            found.append(Path(folder))
        dirs[:] = [name for name in dirs if depth < 2 and name not in (
            ".venv", ".venvs", ".src", ".git", ".repos", "core4.git")]
    return found


# --- the stand-ins for the network -----------------------------------------

def snapshot(dest, branch="master"):
    """A checkout of core4 at ``dest``: this working tree (tracked files as
    they are now and untracked ones not ignored) committed on ``branch``;
    return the commit."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in sorted(set(filter(None, files.split("\0")))):
        source = ROOT / name
        if not os.path.lexists(source) or source.is_dir():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    git = ["git", "-c", "user.name=core4", "-c", "user.email=core4@localhost",
           "-c", "commit.gpgsign=false"]
    for args in (["init", "-q", "-b", branch], ["add", "-A"],
                 ["commit", "-q", "-m", "core4 for the tutorial"]):
        subprocess.run(git + args, cwd=dest, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, check=True,
                          capture_output=True, text=True).stdout.strip()


def wheelhouse(path):
    """Wheels of core4's dependencies and the build backend in ``path``
    (pip installs from there, with no index: no network)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(path),
         str(ROOT), "setuptools>=64", "wheel"], capture_output=True,
        text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


def user_environment(home, bin_dir, wheels):
    """The environment of the tutorial's terminal: a new user ``mra`` with
    HOME ``home``, no core4 configuration and no active environment;
    ``python3`` is the interpreter this venv was made from (``bin_dir``
    comes first on PATH); pip finds packages in ``wheels`` only."""
    drop = ("CORE4_", "PYTHON", "VIRTUAL_ENV", "GIT_", "PIP_", "LC_",
            "COLUMNS", "LINES", "PS1", "PYENV_VERSION", "OLDPWD")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(drop)}
    venv_bin = os.path.dirname(sys.executable)
    path = [bin_dir] + [entry for entry in os.environ.get(
        "PATH", "").split(os.pathsep) if entry and entry != venv_bin]
    env.update({
        "HOME": str(home), "USER": "mra", "LOGNAME": "mra",
        "LANG": "C.UTF-8", "TERM": "xterm", "PATH": os.pathsep.join(path),
        "PAGER": "cat", "GIT_PAGER": "cat", "GIT_EDITOR": "true",
        "PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        # the test machine is busy by design (see tests/support.py)
        "CORE4_OPTION_worker__max_cpu": "!!int 100",
    })
    return env


def bare_python(bin_dir):
    """``bin_dir/python3``: the interpreter this venv was made from (no
    core4 importable)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = Path(sys.base_prefix) / "bin" / "python3"
    os.symlink(python, bin_dir / "python3")
    return bin_dir
