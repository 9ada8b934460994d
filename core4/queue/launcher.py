"""Start job processes for a worker.

* :class:`ForkLauncher` (default) keeps a warm launcher process with core4,
  pymongo and the modules it is given imported; it forks one child per
  job.
  The launcher is single-threaded and never opens a MongoDB client, so a
  fork is safe and each child opens its own.
* :class:`SpawnLauncher` starts a fresh interpreter per job (slow; kept for
  comparison and as a fallback).

Both report :class:`Started` and :class:`Exited` events from :meth:`poll`.
The launcher protocol is one JSON object per line on the launcher's
stdin (commands) and stdout (events).
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
import tempfile
import traceback

import psutil

from core4.queue.process import EXIT_LOST, decode_doc, encode_doc, run_job

Started = collections.namedtuple("Started", "job_id pid")
#: ``reason`` is set when the job never ran: its launcher failed
Exited = collections.namedtuple("Exited", "job_id pid returncode reason",
                                defaults=(None,))

#: modules every launcher imports before it forks
PRELOAD = ("pymongo", "bson", "yaml", "core4.config", "core4.logger",
           "core4.logger.forward", "core4.queue.queue", "core4.queue.runner",
           "core4.queue.job")


class SpawnLauncher:
    """Start each job as ``python -m core4.queue.process`` (cold start)."""

    def __init__(self, python=None, env=None, isolated=False):
        self.python = python or sys.executable
        self.env = env
        self.flags = ["-P"] if isolated else []
        self.procs = {}
        self.events = []

    def start(self, doc, out_path, result_path, log_path=None):
        """Start the job process of the claimed job ``doc``."""
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [self.python, *self.flags, "-m", "core4.queue.process"],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env)
        command = {"doc": encode_doc(doc), "result": result_path,
                   "log": log_path}
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

    def start(self, doc, out_path, result_path, log_path=None):
        """Ask the launcher to fork the job process of ``doc``."""
        self._ensure()
        line = json.dumps({"doc": encode_doc(doc), "out": out_path,
                           "result": result_path, "log": log_path})
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

def _emit(event):
    os.write(1, json.dumps(event).encode() + b"\n")


def _child(doc, out_path, result_path, log_path, wakeup):
    """In the forked child: become the job process and never return."""
    code = EXIT_LOST
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        for fd in wakeup:
            os.close(fd)
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.close(null)
        sys.stdout.reconfigure(line_buffering=True)
        random.seed()
        code = run_job(doc, result_path, log_path)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap(children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job_id = children.pop(pid, None)
        if job_id is not None:
            _emit({"event": "exited", "job_id": job_id, "pid": pid,
                   "returncode": os.waitstatus_to_exitcode(status)})


def serve(preload):
    """The launcher's loop: fork a child per command until stdin closes."""
    for name in PRELOAD + tuple(preload):
        importlib.import_module(name)
    # objects of the warm launcher never change: keep the children's GC off
    # them, so their pages stay shared (copy-on-write) after a fork
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children = {}
    buffer = b""
    retired = False
    _emit({"event": "ready", "pid": os.getpid()})
    while not (retired and not children):
        try:
            ready, _, _ = select.select(
                [wake_r] if retired else [0, wake_r], [], [], 1.0)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        _reap(children)
        if 0 not in ready or retired:
            continue
        data = os.read(0, 1 << 20)
        if not data:
            # the worker is gone: its jobs must not run on unsupervised
            for pid in children:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            break
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            command = json.loads(line)
            if command.get("op") == "retire":
                retired = True
                break
            doc = decode_doc(command["doc"])
            pid = os.fork()
            if pid == 0:
                _child(doc, command["out"], command["result"],
                       command.get("log"), (wake_r, wake_w))
            job_id = encode_doc(doc["_id"])
            children[pid] = job_id
            _emit({"event": "started", "job_id": job_id, "pid": pid})
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
