"""The children of a launcher (:mod:`core4.queue.launcher.server`): a job
process forked for its job, or forked ahead as a :class:`Spare` that waits
for its job (and may be primed for it while its worker claims it)."""

import json
import os
import random
import signal
import sys
import time
import traceback

from core4.queue.launcher.output import OutputCopies, attach
from core4.queue.launcher.process import (EXIT_DONE, EXIT_LOST, command_doc,
                                          prepare_ahead, project_of, run_job,
                                          start_watchdog, write_result)
from core4.queue.launcher.watchdog import Watchdog


#: commands longer than this are not handed to a spare: a pipe takes them
#: whole, without blocking (larger ones go to a fresh fork)
SPARE_MAX = 32768


def prepare_child(close):
    """In a freshly forked child: its own process group and default signal
    handling, none of the launcher's descriptors, stdin on /dev/null (its
    output goes to the pipe :func:`attach` gives it next)."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    for fd in close:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    random.seed()


def run_child(command, configs, done, doc=None, watchdog=None, gate=None,
              primed_log=None):
    """In a prepared child whose output goes into its pipe (see
    :class:`~core4.queue.launcher.output.OutputCopies`): become the job
    process of ``command`` (``doc`` if decoded already) and never return;
    its configuration comes from the launcher's ``configs`` (as they were
    when the child was forked; ``watchdog``: one started ahead; ``gate``:
    the :class:`LineReader` its word to run comes on if the command is
    ``gated``; ``primed_log``: see :func:`~core4.queue.launcher.process.
    run_job`). Once the outcome is written and all output flushed, one
    byte on ``done`` tells the launcher."""
    code = EXIT_LOST
    pid = os.getpid()
    try:
        sys.stdout.reconfigure(line_buffering=True)
        start_watchdog(command, watchdog)
        if doc is None:
            doc = command_doc(command)
        entry = configs.entries.get(project_of(doc))
        code = run_job(doc, command["result"], command.get("log"),
                       entry and entry[1], piped=True,
                       gate=gate.go if command.get("gated") else None,
                       primed_log=primed_log)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            if code == EXIT_DONE and os.getpid() == pid:
                os.write(done, b"1")  # (not from a fork the job made)
        finally:
            os._exit(code)


def _adopt_primed_log(primed_path, path):
    """What a spare logged for its job while primed (a module's records at
    import) becomes the start of the job's log file."""
    if primed_path and path and os.path.exists(primed_path) \
            and not os.path.exists(path):
        try:
            os.replace(primed_path, path)
        except OSError:
            pass  # (those records are lost, not the job)


def unlink_all(*paths):
    """Remove the files ``paths`` that exist (None: no file)."""
    for path in paths:
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


class LineReader:
    """Lines from a pipe, read with ``os.read`` (what comes after a line
    is kept for the next)."""

    def __init__(self, fd):
        self.fd = fd
        self.rest = b""

    def line(self):
        """The next line (with its newline); b"" if the pipe closes
        first."""
        while b"\n" not in self.rest:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return b""
            self.rest += chunk
        line, self.rest = self.rest.split(b"\n", 1)
        return line + b"\n"

    def go(self):
        """Wait for the worker's word on a gated job: True for ``go``,
        False if it dropped the job (the pipe closed). Nothing comes after
        it: the pipe is closed."""
        try:
            return self.line() == GO
        finally:
            os.close(self.fd)


#: most primes one spare takes, and the longest prime line (each written
#: at once, below PIPE_BUF): with the command (at most SPARE_MAX) and its
#: gate's word they fit the spare's pipe, so no write blocks
PRIMES_MAX = 4
PRIME_LINE_MAX = 4000
#: seconds a spare primed for one job waits for it before it is replaced
PRIME_TTL = 30.0
#: the line that lets a gated job run
GO = b"go\n"


def imports_anew(name):
    """True if importing the job class ``name`` imports a module that this
    process has not imported yet."""
    return name.rpartition(".")[0] not in sys.modules


class Spare:
    """A child forked ahead of its job: prepared, it waits for its command
    (one line on ``command``), so that a job starts without a fork.

    It adopts the configuration of ``project`` (the launcher's last job's)
    and rehearses a job's start ahead
    (:func:`~core4.queue.launcher.process.prepare_ahead`). A worker about
    to claim a job may *prime* the spare for it (:meth:`prime`): the spare
    then sets up the job's logging and imports its class while the claim's
    round trip runs, logging into a file of its own (the job's log path
    with ``.prime``; it becomes the job's log when the job comes). A spare
    that imports a module anew for one job (``primed``: that job's id)
    never runs another: what a module does when it is imported stays with
    its own jobs. Its watchdog is armed for that job before the import
    (with a result path of its own too), and it is replaced when the
    worker lost the claim (``unprime``), when another job comes first, or
    after :data:`PRIME_TTL` seconds; the files it wrote are removed then:
    a job's own files are never touched."""

    def __init__(self, configs, close, project=None):
        self.generation = configs.generation
        self.primed = None
        self.primed_at = None
        self.primed_paths = {}   # job id -> its .prime log and result
        self.primes = 0
        made = []
        try:
            cmd_r, self.command = pair = os.pipe()
            made.extend(pair)
            self.done, done_w = pair = os.pipe()
            made.extend(pair)
            self.out, out_w = pair = OutputCopies.pipe()
            made.extend(pair)
            self.pid = os.fork()
        except OSError:
            for fd in made:
                os.close(fd)
            raise
        if self.pid == 0:
            self._wait(cmd_r, done_w, out_w, configs,
                       (*close, self.command, self.done, self.out), project)
        os.close(cmd_r)
        os.close(done_w)
        os.close(out_w)
        os.set_blocking(self.done, False)

    @staticmethod
    def _wait(cmd_r, done_w, out_w, configs, close, project):
        code = EXIT_LOST
        try:
            prepare_child(close)
            attach(out_w)
            watchdog = Watchdog(write_result).start()
            if project:
                prepare_ahead(configs, project)
            reader = LineReader(cmd_r)
            command = json.loads(reader.line() or "null")
            primed = None
            while command and command.get("op") == "prime":
                primed = command
                if imports_anew(command["name"]):
                    start_watchdog(command, watchdog)
                prepare_ahead(configs, command["project"],
                              command["name"], command["log"])
                command = json.loads(reader.line() or "null")
            if command:
                if primed and primed["job_id"] == command["job_id"]:
                    _adopt_primed_log(primed["log"], command.get("log"))
                else:
                    primed = None
                run_child(command, configs, done_w, watchdog=watchdog,
                          gate=reader, primed_log=primed and primed["log"])
            code = 0  # not needed: the launcher retired or is gone
        finally:
            os._exit(code)

    def fds(self):
        """The launcher's ends of the spare's pipes."""
        return tuple(fd for fd in (self.command, self.done, self.out)
                     if fd is not None)

    def prime(self, line, command):
        """Send the spare the prime ``line`` (``command`` decoded); False
        if it is gone."""
        try:
            os.write(self.command, line + b"\n")
        except OSError:
            return False
        self.primes += 1
        self.primed_paths[command["job_id"]] = (command.get("log"),
                                                command.get("result"))
        if imports_anew(command["name"]):
            self.primed = command["job_id"]
            self.primed_at = time.monotonic()
        return True

    def stale(self):
        """True if it was primed for a job that did not come within
        :data:`PRIME_TTL` seconds."""
        return self.primed is not None and \
            time.monotonic() - self.primed_at > PRIME_TTL

    def hand(self, line, keep=False):
        """Send the spare its command; False if it is gone. The command
        pipe is closed, or with ``keep`` returned (the job's gate)."""
        fd, self.command = self.command, None
        try:
            os.write(fd, line + b"\n")
        except OSError:
            os.close(fd)
            return False
        if keep:
            return fd
        os.close(fd)
        return True

    def discard(self, kill=True):
        """Close the pipes of the unused spare; ``kill`` it with its
        process group (and reap it) unless it is gone already; remove the
        files it wrote while primed."""
        for fd in self.fds():
            os.close(fd)
        self.command = self.done = self.out = None
        if kill:  # (with what a module it imported may have started)
            for send in (os.killpg, os.kill):  # (before or after setsid)
                try:
                    send(self.pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        for paths in self.primed_paths.values():  # (it writes no more)
            unlink_all(*paths)
        self.primed_paths = {}

    def handed(self, job_id):
        """The spare now runs the job ``job_id``: remove the files of the
        other jobs it was primed for; return the ``.prime`` log and result
        paths of its job (or Nones)."""
        own = self.primed_paths.pop(job_id, (None, None))
        for paths in self.primed_paths.values():
            unlink_all(*paths)
        self.primed_paths = {}
        return own
