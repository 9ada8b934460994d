"""The launcher process (``python -m core4.queue.launcher``): a warm
Python with core4, pymongo and the modules it is given imported and the
configuration loaded (:class:`~core4.queue.launcher.process.ConfigCache`),
which forks one child per job, ahead of time: a spare
(:class:`~core4.queue.launcher.child.Spare`) waits for the next job. It is
single-threaded and never opens a MongoDB client, so a fork is safe and
each child opens its own.

The protocol with its worker (:class:`~core4.queue.launcher.launcher.
ForkLauncher`) is one JSON object per line on the launcher's stdin
(commands: a job to start; ``go`` and ``drop`` for a gated one; ``prime``
and ``unprime`` around a claim, see the spare; ``retire``) and stdout
(events: ``ready``, ``started``, ``done``, ``exited``). A job's
output goes into a pipe whose read end the launcher holds
(:class:`~core4.queue.launcher.output.OutputCopies`).

``ready`` names the launcher's :data:`PROTOCOL`. From protocol 2 on, a
worker sends a job's document as BSON (``bson``, see
:func:`~core4.queue.launcher.process.encode_bson`) instead of extended
JSON (``doc``), and both before the launcher said it is ready; a launcher
takes either (BSON if both come), so a project's virtualenv may hold an
older or a newer core4 than its worker.
"""

import gc
import importlib
import json
import os
import select
import signal
import time

from core4.queue.launcher.child import (GO, PRIME_LINE_MAX, PRIMES_MAX,
                                        SPARE_MAX, LineReader, Spare,
                                        prepare_child, run_child, unlink_all)
from core4.queue.launcher.output import OutputCopies, attach
from core4.queue.launcher.process import EXIT_LOST, ConfigCache

#: modules every launcher imports before it forks
PRELOAD = ("pymongo", "bson", "yaml", "core4.config", "core4.logger",
           "core4.logger.forward", "core4.queue.queue",
           "core4.queue.launcher.runner", "core4.queue.job",
           "core4.queue.helper.job")




class WorkerGone(Exception):
    """The worker's end of the launcher's pipe is closed."""


def _emit(event):
    try:
        os.write(1, json.dumps(event).encode() + b"\n")
    except OSError:  # BrokenPipeError: the worker died
        raise WorkerGone() from None


#: the version of the protocol this launcher speaks (see above)
PROTOCOL = 2

#: seconds between handing a job to the spare and forking the next spare
SPARE_DELAY = 0.02


class Server:
    """The launcher's loop: one job process per command on stdin, forked
    from this warm process (or a spare forked ahead,
    :class:`~core4.queue.launcher.child.Spare`), until stdin closes or the
    worker retires the launcher."""

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
        _emit({"event": "ready", "pid": os.getpid(), "protocol": PROTOCOL})
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
                    prepare_child(close)
                    attach(out_w)
                    run_child(command, self.configs, done_w, doc,
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
        :class:`~core4.queue.launcher.child.Spare`), if it is free and its
        configuration current."""
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
        unlink_all(primed_log, primed_result)


def serve(preload):
    """The launcher process: serve commands until stdin closes."""
    return Server(preload).serve()


