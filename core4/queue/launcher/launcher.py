"""Start job processes for a worker.

* :class:`ForkLauncher` (default) talks to a warm launcher process
  (:mod:`core4.queue.launcher.server`), which forks one child per job.
* :class:`SpawnLauncher` starts a fresh interpreter per job (slow; kept for
  comparison and as a fallback).

A job started ``gated`` prepares (configuration, logging, its class) and
then waits for :meth:`gate`: run it, or drop it (its process exits without
running or recording it). Its worker admits it meanwhile.

Both report :class:`Started` and :class:`Exited` events from :meth:`poll`;
a forked job process also reports :class:`Done` as its last act before it
exits, so that its worker can record the outcome while the process is torn
down. The launcher protocol is one JSON object per line on the launcher's
stdin (commands) and stdout (events); the launcher process is
``python -m core4.queue.launcher``
(:func:`core4.queue.launcher.server.serve`).
"""

import collections
import json
import os
import subprocess
import sys
import tempfile

import psutil

from core4.queue.launcher.process import (decode_doc, encode_bson,
                                          encode_doc, project_of)

Started = collections.namedtuple("Started", "job_id pid")
#: the job process wrote its outcome and flushed its output and log: it is
#: about to exit (fork mode only; :class:`Exited` still follows)
Done = collections.namedtuple("Done", "job_id pid")
#: ``reason`` is set when the job never ran: its launcher failed
Exited = collections.namedtuple("Exited", "job_id pid returncode reason",
                                defaults=(None,))

class SpawnLauncher:
    """Start each job as ``python -m core4.queue.launcher.process`` (cold
    start)."""

    def __init__(self, python=None, env=None, isolated=False):
        self.python = python or sys.executable
        self.env = env
        self.flags = ["-P"] if isolated else []
        self.procs = {}
        self.gates = {}
        self.events = []

    def start(self, doc, out_path, result_path, log_path=None, watch=None,
              gated=False):
        """Start the job process of the claimed job ``doc`` (``watch``: the
        settings of its watchdog, see
        :func:`~core4.queue.launcher.process.start_watchdog`; ``gated``:
        it runs after :meth:`gate`)."""
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [self.python, *self.flags, "-m",
                 "core4.queue.launcher.process"],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env)
        command = {"doc": encode_doc(doc), "result": result_path,
                   "log": log_path, "watch": watch, "gated": gated}
        try:
            proc.stdin.write((json.dumps(command) + "\n").encode())
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: its exit is reported
        if gated:
            self.gates[doc["_id"]] = proc.stdin
        else:
            try:
                proc.stdin.close()
            except OSError:
                pass
        self.procs[doc["_id"]] = proc
        self.events.append(Started(doc["_id"], proc.pid))

    def prime(self, job_id, name, log_path=None, result_path=None,
              watch=None):
        """Nothing to prepare: each job starts a fresh interpreter."""
        return False

    def unprime(self, job_id):
        """Nothing was prepared."""

    def gate(self, job_id, run):
        """Let the gated job ``job_id`` run (``run``), or drop it."""
        stdin = self.gates.pop(job_id, None)
        if stdin is None:
            return
        try:
            if run:
                stdin.write(b"go\n")
        except OSError:
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def poll(self):
        """Return the events since the last call."""
        for job_id, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                del self.procs[job_id]
                self.gate(job_id, run=False)
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
        self.protocol = None   # until the launcher says it is ready

    def _ensure(self):
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self._read()  # the events it sent before it died
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
        self.protocol = None

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

    def start(self, doc, out_path, result_path, log_path=None, watch=None,
              gated=False):
        """Ask the launcher to fork the job process of ``doc`` (``watch``:
        the settings of its watchdog, see
        :func:`~core4.queue.launcher.process.start_watchdog`; ``gated``:
        it runs after :meth:`gate`)."""
        self._ensure()
        command = {"out": out_path, "result": result_path, "log": log_path,
                   "watch": watch, "project": project_of(doc),
                   "job_id": encode_doc(doc["_id"]), "gated": gated}
        # (both while the launcher has not said which it takes: a job sees
        # its document the same way on every launcher of one core4)
        if self.protocol is None or self.protocol >= 2:
            command["bson"] = encode_bson(doc)
        if self.protocol is None or self.protocol < 2:
            command["doc"] = encode_doc(doc)  # (an older core4)
        line = json.dumps(command)
        self.pending[doc["_id"]] = None
        self._send(line)

    def prime(self, job_id, name, log_path=None, result_path=None,
              watch=None):
        """Have the spare job process prepare for the job ``job_id`` of
        class ``name`` that the worker is about to claim: its logging into
        ``log_path``, its class imported, its watchdog armed (``watch``,
        ``result_path``: as for :meth:`start`) while it imports (see
        :class:`~core4.queue.launcher.child.Spare`). Only an idle
        launcher is asked (a busy one's spare is taken by the next job
        anyway); True if it was."""
        if self.proc is None or self.retired or self.pending \
                or self.proc.poll() is not None:
            return False
        self._send(json.dumps({
            "op": "prime", "job_id": encode_doc(job_id), "name": name,
            "project": project_of({"name": name}), "log": log_path,
            "result": result_path, "watch": watch}))
        return True

    def unprime(self, job_id):
        """The claim of the job ``job_id`` was lost: a spare primed for it
        is replaced."""
        if self.proc is not None and self.proc.poll() is None:
            self._send(json.dumps({"op": "unprime",
                                   "job_id": encode_doc(job_id)}))

    def gate(self, job_id, run):
        """Let the gated job ``job_id`` run (``run``), or drop it."""
        if self.proc is not None and job_id in self.pending:
            self._send(json.dumps({"op": "go" if run else "drop",
                                   "job_id": encode_doc(job_id)}))

    def _send(self, line):
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._read()  # the events it sent before it died
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
            if event["event"] == "ready":
                self.protocol = event.get("protocol", 1)
            elif event["event"] == "started":
                self.pending[job_id] = event["pid"]
                self.events.append(Started(job_id, event["pid"]))
            elif event["event"] == "done":
                self.events.append(Done(job_id, event["pid"]))
            elif event["event"] == "exited":
                self.pending.pop(job_id, None)
                self.events.append(Exited(job_id, event["pid"],
                                          event["returncode"]))

    def close(self):
        """Stop the launcher; it kills the job processes still running
        (they must not run unsupervised)."""
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
