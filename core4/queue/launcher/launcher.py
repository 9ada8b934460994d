"""Start job processes for a worker.

* :class:`ForkLauncher` (default) keeps a warm launcher process with core4,
  pymongo and the modules it is given imported, and the configuration
  loaded (:class:`~core4.queue.launcher.process.ConfigCache`); it forks one
  child per job, ahead of time: a :class:`Spare` waits for the next job.
  The launcher is single-threaded and never opens a MongoDB client, so a
  fork is safe and each child opens its own.
* :class:`SpawnLauncher` starts a fresh interpreter per job (slow; kept for
  comparison and as a fallback).

Both report :class:`Started` and :class:`Exited` events from :meth:`poll`;
a forked job process also reports :class:`Done` as its last act before it
exits, so that its worker can record the outcome while the process is torn
down. The launcher protocol is one JSON object per line on the launcher's
stdin (commands) and stdout (events); the launcher process is
``python -m core4.queue.launcher`` (:func:`serve`).
"""

import collections
import gc
import importlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import tempfile
import traceback

import psutil

from core4.queue.launcher.output import OutputCopies, attach
from core4.queue.launcher.process import start_watchdog
from core4.queue.launcher.process import (EXIT_DONE, EXIT_LOST,
                                          ConfigCache, decode_doc,
                                          encode_doc, run_job)

Started = collections.namedtuple("Started", "job_id pid")
#: the job process wrote its outcome and flushed its output and log: it is
#: about to exit (fork mode only; :class:`Exited` still follows)
Done = collections.namedtuple("Done", "job_id pid")
#: ``reason`` is set when the job never ran: its launcher failed
Exited = collections.namedtuple("Exited", "job_id pid returncode reason",
                                defaults=(None,))

#: modules every launcher imports before it forks
PRELOAD = ("pymongo", "bson", "yaml", "core4.config", "core4.logger",
           "core4.logger.forward", "core4.queue.queue",
           "core4.queue.launcher.runner", "core4.queue.job",
           "core4.queue.helper.job")


class SpawnLauncher:
    """Start each job as ``python -m core4.queue.launcher.process`` (cold
    start)."""

    def __init__(self, python=None, env=None, isolated=False):
        self.python = python or sys.executable
        self.env = env
        self.flags = ["-P"] if isolated else []
        self.procs = {}
        self.events = []

    def start(self, doc, out_path, result_path, log_path=None, watch=None):
        """Start the job process of the claimed job ``doc`` (``watch``: the
        settings of its watchdog, see :func:`start_watchdog`)."""
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [self.python, *self.flags, "-m",
                 "core4.queue.launcher.process"],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env)
        command = {"doc": encode_doc(doc), "result": result_path,
                   "log": log_path, "watch": watch}
        proc.stdin.write((json.dumps(command) + "\n").encode())
        proc.stdin.close()
        self.procs[doc["_id"]] = proc
        self.events.append(Started(doc["_id"], proc.pid))

    def poll(self):
        """Return the events since the last call."""
        for job_id, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                del self.procs[job_id]
                self.events.append(Exited(job_id, proc.pid, code))
        events, self.events = self.events, []
        return events

    def fileno(self):
        """Nothing to wait on: the worker polls."""
        return None

    def retire(self):
        """Nothing to do: each job has its own interpreter."""

    def finished(self):
        """True once no job process of this launcher runs."""
        return not self.procs

    def close(self):
        """Nothing to stop: job processes are independent."""


class LauncherError(Exception):
    """A launcher cannot be started (e.g. its Python is missing)."""


class ForkLauncher:
    """A warm launcher process that forks a child per job."""

    def __init__(self, python=None, env=None, preload=(), isolated=False):
        self.python = python or sys.executable
        self.env = env
        # -P: the worker's directory must not shadow a project's packages
        self.flags = ["-P"] if isolated else []
        self.preload = tuple(preload)
        self.proc = None
        self.stderr = None
        self.buffer = b""
        self.pending = {}      # job_id -> None (sent) or pid (started)
        self.orphans = {}      # job_id -> pid, watched after a launcher died
        self.events = []
        self.retired = False

    def _ensure(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self._launcher_died()
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [self.python, *self.flags, "-m", "core4.queue.launcher",
                 *self.preload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self.stderr, env=self.env)
        except OSError as exc:
            self.proc = None
            raise LauncherError("cannot start %s: %s" % (self.python, exc))
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buffer = b""

    def _failure(self):
        """The launcher's last words, if it died of an error."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return None
        if not self.proc.returncode:
            return None
        self.stderr.seek(0)
        lines = self.stderr.read().decode("utf-8", "replace").strip()
        last = lines.splitlines()[-1] if lines else "no output"
        return "launcher %s exited with %s: %s" % (
            self.python, self.proc.returncode, last)

    def _launcher_died(self):
        reason = self._failure()
        for job_id, pid in self.pending.items():
            if pid is None:
                self.events.append(Exited(job_id, None, None, reason))
            else:
                self.orphans[job_id] = pid
        self.pending = {}

    def retire(self):
        """Stop taking jobs; the launcher exits once its running jobs have
        ended (their events still arrive through :meth:`poll`)."""
        self.retired = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "retire"}\n')
                self.proc.stdin.flush()
            except OSError:
                pass

    def finished(self):
        """True once a retired launcher has no jobs left."""
        return self.retired and not self.pending and not self.orphans and (
            self.proc is None or self.proc.poll() is not None)

    def start(self, doc, out_path, result_path, log_path=None, watch=None):
        """Ask the launcher to fork the job process of ``doc`` (``watch``:
        the settings of its watchdog, see :func:`start_watchdog`)."""
        self._ensure()
        line = json.dumps({"doc": encode_doc(doc), "out": out_path,
                           "result": result_path, "log": log_path,
                           "watch": watch, "project": _project(doc),
                           "job_id": encode_doc(doc["_id"])})
        self.pending[doc["_id"]] = None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._launcher_died()

    def fileno(self):
        """The descriptor to wait on for events (or None)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.stdout.fileno()

    def poll(self):
        """Return the events since the last call."""
        if self.proc is not None:
            self._read()
            if self.proc.poll() is not None:
                self._read()
                self._launcher_died()
                self.proc = None
        for job_id, pid in list(self.orphans.items()):
            if not _running(pid):
                del self.orphans[job_id]
                self.events.append(Exited(job_id, pid, None))
        events, self.events = self.events, []
        return events

    def _read(self):
        try:
            data = self.proc.stdout.read()
        except (BlockingIOError, ValueError):
            data = None
        if data:
            self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            event = json.loads(line)
            job_id = decode_doc(event["job_id"]) if "job_id" in event \
                else None
            if event["event"] == "started":
                self.pending[job_id] = event["pid"]
                self.events.append(Started(job_id, event["pid"]))
            elif event["event"] == "done":
                self.events.append(Done(job_id, event["pid"]))
            elif event["event"] == "exited":
                self.pending.pop(job_id, None)
                self.events.append(Exited(job_id, event["pid"],
                                          event["returncode"]))

    def close(self):
        """Stop the launcher (running job processes are not affected)."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _running(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# the launcher process ------------------------------------------------------

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
    handling, none of the launcher's descriptors, stdin and output on
    /dev/null until the job's output file is known."""
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


def _project(doc):
    return doc["name"].split(".", 1)[0]


def _run(command, configs, done, doc=None):
    """In a prepared child whose output goes into its pipe (see
    :class:`~core4.queue.launcher.output.OutputCopies`): become the job
    process of ``command`` (``doc`` if decoded already) and never return;
    its configuration comes from the launcher's ``configs`` (as they were
    when the child was forked). Once the outcome is written and all output
    flushed, one byte on ``done`` tells the launcher."""
    code = EXIT_LOST
    pid = os.getpid()
    try:
        sys.stdout.reconfigure(line_buffering=True)
        start_watchdog(command)
        if doc is None:
            doc = decode_doc(command["doc"])
        entry = configs.entries.get(_project(doc))
        code = run_job(doc, command["result"], command.get("log"),
                       entry and entry[1], piped=True)
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


def _read_line(fd):
    """Read one line from ``fd``; b"" if it closes first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        data += chunk
    return data


#: seconds between handing a job to the spare and forking the next spare
SPARE_DELAY = 0.02


class Spare:
    """A child forked ahead of its job: prepared, it waits for its command
    (one line on ``command``), so that a job starts without a fork."""

    def __init__(self, configs, close):
        self.generation = configs.generation
        cmd_r, self.command = os.pipe()
        self.done, done_w = os.pipe()
        self.out, out_w = OutputCopies.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            for fd in (cmd_r, self.command, self.done, done_w, self.out,
                       out_w):
                os.close(fd)
            raise
        if self.pid == 0:
            self._wait(cmd_r, done_w, out_w, configs,
                       (*close, self.command, self.done, self.out))
        os.close(cmd_r)
        os.close(done_w)
        os.close(out_w)
        os.set_blocking(self.done, False)

    @staticmethod
    def _wait(cmd_r, done_w, out_w, configs, close):
        code = EXIT_LOST
        try:
            _prepare(close)
            attach(out_w)
            line = _read_line(cmd_r)
            if line:
                _run(json.loads(line), configs, done_w)
            code = 0  # not needed: the launcher retired or is gone
        finally:
            os._exit(code)

    def fds(self):
        """The launcher's ends of the spare's pipes."""
        return tuple(fd for fd in (self.command, self.done, self.out)
                     if fd is not None)

    def hand(self, line):
        """Send the spare its command; False if it is gone."""
        try:
            os.write(self.command, line + b"\n")
            return True
        except OSError:
            return False
        finally:
            os.close(self.command)
            self.command = None

    def discard(self, kill=True):
        """Close the pipes of the unused spare; ``kill`` it (and reap it)
        unless it is gone already."""
        for fd in self.fds():
            os.close(fd)
        self.command = self.done = self.out = None
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass


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
        self.spare = None
        self.spare_at = 0.0    # monotonic time to fork the next spare
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
            wait = max(0.0, self.spare_at - time.monotonic())
            if self.spare is None and not self.retired and not wait:
                try:
                    self.spare = Spare(self.configs, self._inherited())
                except OSError:
                    pass  # no spare: jobs are forked when they come
            poller = select.poll()  # (any number of descriptors)
            for fd in (self.wake[0], *self.dones, *self.outputs.files,
                       *(() if self.retired else (0,))):
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
            if 0 not in ready or self.retired:
                continue
            data = os.read(0, 1 << 20)
            if not data:
                raise WorkerGone()
            buffer += data
            while b"\n" in buffer and not self.retired:
                line, buffer = buffer.split(b"\n", 1)
                self._command(line)

    def _inherited(self):
        """The launcher's descriptors a new child must close."""
        spare = self.spare.fds() if self.spare is not None else ()
        return (*self.wake, *self.dones, *spare, *self.outputs.fds())

    def _command(self, line):
        command = json.loads(line)
        if command.get("op") == "retire":
            self.retired = True
            if self.spare is not None:
                self.spare.discard()
                self.spare = None
            return
        # the job's document is decoded by its process, not here
        doc = None
        self.configs.get(command["project"])  # loaded anew if a file changed
        job_id = command["job_id"]
        spare, self.spare = self.spare, None
        if spare is not None and (
                spare.generation != self.configs.generation
                or len(line) > SPARE_MAX or not spare.hand(line)):
            spare.discard()
            spare = None
        if spare is not None:
            pid, done_r, out_r = spare.pid, spare.done, spare.out
            # the next spare waits a moment: its fork would compete for the
            # CPU with the job that starts now (unless another job comes)
            self.spare_at = time.monotonic() + SPARE_DELAY
        else:
            done_r, done_w = os.pipe()
            out_r, out_w = OutputCopies.pipe()
            close = self._inherited() + (done_r, out_r)
            pid = os.fork()
            if pid == 0:
                try:
                    _prepare(close)
                    attach(out_w)
                    _run(command, self.configs, done_w, doc)
                finally:
                    os._exit(EXIT_LOST)
            os.close(done_w)
            os.close(out_w)
            os.set_blocking(done_r, False)
        self.outputs.capture(pid, out_r, command["out"])
        self.children[pid] = job_id
        self.dones[done_r] = (pid, job_id)
        _emit({"event": "started", "job_id": job_id, "pid": pid})

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
                self.spare.discard(kill=False)
                self.spare = None
            job_id = self.children.pop(pid, None)
            for fd in [fd for fd, owner in self.dones.items()
                       if owner[0] == pid]:
                self._done(fd)
            self.outputs.close(pid)
            if job_id is not None:
                _emit({"event": "exited", "job_id": job_id, "pid": pid,
                       "returncode": os.waitstatus_to_exitcode(status)})


def serve(preload):
    """The launcher process: serve commands until stdin closes."""
    return Server(preload).serve()


