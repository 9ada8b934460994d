"""The launcher process (``python -m core4.queue.launcher``): a warm
Python with core4, pymongo and the modules it is given imported and the
configuration loaded (:class:`~core4.queue.launcher.process.ConfigCache`),
which forks one child per job, ahead of time: a :class:`Spare` waits for
the next job. It is single-threaded and never opens a MongoDB client, so a
fork is safe and each child opens its own.

The protocol with its worker (:class:`~core4.queue.launcher.launcher.
ForkLauncher`) is one JSON object per line on the launcher's stdin
(commands: a job to start; ``go`` and ``drop`` for a gated one; ``prime``
and ``unprime`` around a claim, see :class:`Spare`; ``retire``) and
stdout (events: ``ready``, ``started``, ``done``, ``exited``). A job's
output goes into a pipe whose read end the launcher holds
(:class:`~core4.queue.launcher.output.OutputCopies`).
"""

import gc
import importlib
import json
import os
import random
import select
import signal
import sys
import time
import traceback

from core4.queue.launcher.output import OutputCopies, attach
from core4.queue.launcher.process import (EXIT_DONE, EXIT_LOST,
                                          ConfigCache, decode_doc,
                                          prepare_ahead, project_of, run_job,
                                          start_watchdog, write_result)
from core4.queue.launcher.watchdog import Watchdog

#: modules every launcher imports before it forks
PRELOAD = ("pymongo", "bson", "yaml", "core4.config", "core4.logger",
           "core4.logger.forward", "core4.queue.queue",
           "core4.queue.launcher.runner", "core4.queue.job",
           "core4.queue.helper.job")


#: commands longer than this are not handed to a spare: a pipe takes them
#: whole, without blocking (larger ones go to a fresh fork)
SPARE_MAX = 32768


class WorkerGone(Exception):
    """The worker's end of the launcher's pipe is closed."""


def _emit(event):
    try:
        os.write(1, json.dumps(event).encode() + b"\n")
    except OSError:  # BrokenPipeError: the worker died
        raise WorkerGone() from None


def _prepare(close):
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


def _run(command, configs, done, doc=None, watchdog=None, gate=None):
    """In a prepared child whose output goes into its pipe (see
    :class:`~core4.queue.launcher.output.OutputCopies`): become the job
    process of ``command`` (``doc`` if decoded already) and never return;
    its configuration comes from the launcher's ``configs`` (as they were
    when the child was forked; ``watchdog``: one started ahead; ``gate``:
    the :class:`LineReader` its word to run comes on if the command is
    ``gated``). Once the outcome is written and all output flushed, one
    byte on ``done`` tells the launcher."""
    code = EXIT_LOST
    pid = os.getpid()
    try:
        sys.stdout.reconfigure(line_buffering=True)
        start_watchdog(command, watchdog)
        if doc is None:
            doc = decode_doc(command["doc"])
        entry = configs.entries.get(project_of(doc))
        code = run_job(doc, command["result"], command.get("log"),
                       entry and entry[1], piped=True,
                       gate=gate.go if command.get("gated") else None)
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


def _unlink(*paths):
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


#: seconds between handing a job to the spare and forking the next spare
SPARE_DELAY = 0.02
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
            _prepare(close)
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
                _run(command, configs, done_w, watchdog=watchdog,
                     gate=reader)
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
            _unlink(*paths)
        self.primed_paths = {}

    def handed(self, job_id):
        """The spare now runs the job ``job_id``: remove the files of the
        other jobs it was primed for; return the ``.prime`` log and result
        paths of its job (or Nones)."""
        own = self.primed_paths.pop(job_id, (None, None))
        for paths in self.primed_paths.values():
            _unlink(*paths)
        self.primed_paths = {}
        return own


class Server:
    """The launcher's loop: one job process per command on stdin, forked
    from this warm process (or a :class:`Spare` forked ahead), until stdin
    closes or the worker retires the launcher."""

    def __init__(self, preload):
        for name in PRELOAD + tuple(preload):
            importlib.import_module(name)
        self.configs = ConfigCache()
        for project in tuple(preload) or ("core4",):
            self.configs.get(project)
        # objects of the warm launcher never change: keep the children's GC
        # off them, so their pages stay shared (copy-on-write) after a fork
        gc.freeze()
        self.wake = os.pipe()
        for fd in self.wake:
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake[1])
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.children = {}     # pid -> job id
        self.dones = {}        # read end of a child's done pipe -> pid, job id
        self.outputs = OutputCopies()
        self.gates = {}        # job id -> (pid, write end of its gate)
        self.primed = {}       # pid -> .prime log and result, result path
        self.spare = None
        self.spare_at = 0.0    # monotonic time to fork the next spare
        # the spare adopts the configuration of the last job's project
        self.project = (tuple(preload) or ("core4",))[0]
        self.retired = False

    def serve(self):
        """Run until stdin closes, or until retired and all jobs ended. When
        the worker is gone (stdin closed, or its pipe broken when the
        launcher reports to it), the job process groups are killed: they
        must not run on unsupervised."""
        try:
            self._serve()
        except WorkerGone:
            self._kill_children()
        if self.spare is not None:
            self.spare.discard()
        for job_id in list(self.gates):
            self._gate(job_id, run=False)
        self.outputs.close_all()
        return 0

    def _kill_children(self):
        for pid in self.children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    def _serve(self):
        buffer = b""
        _emit({"event": "ready", "pid": os.getpid()})
        while not (self.retired and not self.children):
            if self.spare is not None and self.spare.stale():
                self.spare.discard()
                self.spare = None
            wait = max(0.0, self.spare_at - time.monotonic())
            if self.spare is None and not self.retired and not wait:
                try:
                    self.spare = Spare(self.configs, self._inherited(),
                                       self.project)
                except OSError:
                    pass  # no spare: jobs are forked when they come
            poller = select.poll()  # (any number of descriptors)
            for fd in (self.wake[0], *self.dones, *self.outputs.files, 0):
                poller.register(fd, select.POLLIN)
            timeout = 1000 if self.spare is not None or self.retired \
                else wait * 1000
            try:
                ready = [fd for fd, _ in poller.poll(timeout)]
            except InterruptedError:
                ready = []
            if self.wake[0] in ready:
                try:
                    while os.read(self.wake[0], 512):
                        pass
                except BlockingIOError:
                    pass
            for fd in ready:
                if fd in self.outputs.files:
                    self.outputs.copy(fd)
                if fd in self.dones:
                    self._done(fd)
            self._reap()
            if 0 not in ready:
                continue
            data = os.read(0, 1 << 20)
            if not data:
                raise WorkerGone()
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self._command(line)

    def _inherited(self):
        """The launcher's descriptors a new child must close."""
        spare = self.spare.fds() if self.spare is not None else ()
        return (*self.wake, *self.dones, *spare, *self.outputs.fds(),
                *(fd for _, fd in self.gates.values()))

    def _command(self, line):
        command = json.loads(line)
        if command.get("op") == "retire":
            self.retired = True
            if self.spare is not None:
                self.spare.discard()
                self.spare = None
            return
        if command.get("op") in ("go", "drop"):
            # (also when retired: the gated jobs it started wait for it)
            self._gate(command["job_id"], run=command["op"] == "go")
            return
        if self.retired:
            return  # no new job once retired
        if command.get("op") == "prime":
            self._prime(line, command)
            return
        if command.get("op") == "unprime":
            # the claim was lost: a new spare replaces the one primed for it
            if self.spare is not None and \
                    self.spare.primed == command["job_id"]:
                self.spare.discard()
                self.spare = None
            return
        # the job's document is decoded by its process, not here
        doc = None
        self.configs.get(command["project"])  # loaded anew if a file changed
        job_id = command["job_id"]
        gated = bool(command.get("gated"))
        gate_w = None
        spare, self.spare = self.spare, None
        self.project = command["project"]
        if spare is not None and (
                spare.generation != self.configs.generation
                or spare.primed not in (None, command["job_id"])
                or len(line) > SPARE_MAX):
            spare.discard()
            spare = None
        if spare is not None:
            handed = spare.hand(line, keep=gated)
            if handed is False:
                spare.discard()
                spare = None
            elif gated:
                gate_w = handed
        if spare is not None:
            pid, done_r, out_r = spare.pid, spare.done, spare.out
            primed_log, primed_result = spare.handed(job_id)
            if primed_log or primed_result:
                self.primed[pid] = (primed_log, primed_result,
                                    command.get("result"))
            # the next spare waits a moment: its fork would compete for the
            # CPU with the job that starts now (unless another job comes)
            self.spare_at = time.monotonic() + SPARE_DELAY
        else:
            done_r, done_w = os.pipe()
            out_r, out_w = OutputCopies.pipe()
            gate_r, gate_w = os.pipe() if gated else (None, None)
            close = self._inherited() + (done_r, out_r) + (
                (gate_w,) if gated else ())
            pid = os.fork()
            if pid == 0:
                try:
                    _prepare(close)
                    attach(out_w)
                    _run(command, self.configs, done_w, doc,
                         gate=LineReader(gate_r) if gated else None)
                finally:
                    os._exit(EXIT_LOST)
            os.close(done_w)
            os.close(out_w)
            if gated:
                os.close(gate_r)
            os.set_blocking(done_r, False)
        if gate_w is not None:
            self.gates[job_id] = (pid, gate_w)
        self.outputs.capture(pid, out_r, command["out"])
        self.children[pid] = job_id
        self.dones[done_r] = (pid, job_id)
        _emit({"event": "started", "job_id": job_id, "pid": pid})

    def _prime(self, line, command):
        """Prime the spare for the job the worker is about to claim (see
        :class:`Spare`), if it is free and its configuration current."""
        spare = self.spare
        self.configs.get(command["project"])  # loaded anew if a file changed
        if spare is not None and spare.primed not in (None,
                                                      command["job_id"]):
            spare.discard()  # primed for a job that did not come
            self.spare = spare = None
        if spare is None or spare.primed is not None \
                or spare.primes >= PRIMES_MAX \
                or len(line) > PRIME_LINE_MAX \
                or spare.generation != self.configs.generation:
            return
        if not spare.prime(line, command):
            spare.discard()
            self.spare = None

    def _gate(self, job_id, run, pid=None):
        """Let the gated job ``job_id`` run, or drop it (its process reads
        the gate's end and exits without running it); with ``pid``, only
        if that process is the job's."""
        pid_fd = self.gates.get(job_id)
        if pid_fd is None or pid not in (None, pid_fd[0]):
            return  # it exited already
        fd = self.gates.pop(job_id)[1]
        try:
            if run:
                os.write(fd, GO)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _done(self, fd):
        """Relay the done byte of a job process (if it sent one) and close
        its pipe."""
        pid, job_id = self.dones.pop(fd)
        try:
            if os.read(fd, 1):
                # all it wrote before is in its capture file for the worker
                self.outputs.drain(pid)
                _emit({"event": "done", "job_id": job_id, "pid": pid})
        except OSError:
            pass
        os.close(fd)

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare.pid:
                # it died unused: a new one follows
                try:  # (with what a module it imported started)
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                self.spare.discard(kill=False)
                self.spare = None
            self._settle_primed(pid)
            job_id = self.children.pop(pid, None)
            if job_id is not None:
                self._gate(job_id, run=False, pid=pid)
            for fd in [fd for fd, owner in self.dones.items()
                       if owner[0] == pid]:
                self._done(fd)
            self.outputs.close(pid)
            if job_id is not None:
                _emit({"event": "exited", "job_id": job_id, "pid": pid,
                       "returncode": os.waitstatus_to_exitcode(status)})


    def _settle_primed(self, pid):
        """The process ``pid`` that was primed for its job ended: an
        outcome its watchdog wrote before the job's own path was known
        (the job was fenced during its primed import) becomes the job's;
        the ``.prime`` files go."""
        primed_log, primed_result, result = self.primed.pop(
            pid, (None, None, None))
        if primed_result and result and os.path.exists(primed_result) \
                and not os.path.exists(result):
            try:
                os.replace(primed_result, result)
            except OSError:
                pass
        _unlink(primed_log, primed_result)


def serve(preload):
    """The launcher process: serve commands until stdin closes."""
    return Server(preload).serve()


