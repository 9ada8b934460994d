"""Recording how finished job processes ended.

When job processes of a worker end, the worker stores what they printed,
forwards their log records, and records each outcome in the job's
document, fenced by its lease token (:mod:`core4.queue.lifecycle`). Jobs
that completed in the same pass of the worker's loop are recorded together:
one bulk write and one read, however many they are (most jobs end
``complete``, so that is where a busy worker spends its round trips). Their
log records go to ``sys_log`` in one insert before the outcomes are written,
so a job found complete has its log records stored.
"""

import logging

from core4.logger.mongo import CONSOLE_ONLY
from core4.queue import dependency, events, lifecycle, states
from core4.queue.cookie import record_runtime
from core4.queue.launcher.jobprocess import store_output
from core4.queue.launcher.process import read_result


class Finisher:
    """Records the ends of one worker's job processes; ``completed``
    collects the complete documents that still have to be journaled."""

    def __init__(self, queue, events_buffer, logs, log, stdout_max):
        self.queue = queue
        self.events = events_buffer
        self.logs = logs
        self.log = log
        self.stdout_max = stdout_max
        self.completed = []

    def finish(self, procs):
        """Record the ends of the job processes ``procs`` (all of them have
        ended or reported their outcome)."""
        outcomes = {}
        for proc in procs:
            store_output(self.queue, proc, self.stdout_max)
            if self.logs is not None and proc.log_path:
                self.logs.read(proc.log_path)
            outcomes[proc.doc["_id"]] = read_result(proc.result_path)
        if self.logs is not None:
            self.logs.flush()
        complete = []
        for proc in procs:
            outcome = outcomes[proc.doc["_id"]]
            if not proc.record:
                continue
            if outcome is not None and proc.reason is None:
                if outcome.get("state") == states.COMPLETE:
                    complete.append(proc)
                else:
                    self.report(proc, lifecycle.apply_outcome(
                        self.queue, proc.doc, outcome, move=False), outcome)
            else:
                self.report(proc, self.interrupted(proc), outcome)
        if len(complete) == 1:
            proc = complete[0]
            self.completed_job(proc, lifecycle.set_complete(
                self.queue, proc.doc, move=False, at=lifecycle.ended_at(
                    outcomes[proc.doc["_id"]])), outcomes)
        elif complete:
            after = lifecycle.complete_many(
                self.queue, [p.doc for p in complete],
                {p.doc["_id"]: lifecycle.ended_at(outcomes[p.doc["_id"]])
                 for p in complete})
            for proc in complete:
                self.completed_job(proc, after.get(proc.doc["_id"]),
                                   outcomes)
        for proc in procs:
            if self.logs is not None and proc.log_path:
                self.logs.forget(proc.log_path)
            proc.remove_files()

    def interrupted(self, proc):
        """Record a job process that ended without an outcome, or was
        stopped by the worker."""
        event = proc.exit_event
        if getattr(event, "reason", None):
            return lifecycle.set_error(self.queue, proc.doc,
                                       message=event.reason)
        if proc.reason and proc.reason.startswith("stopped by"):
            return lifecycle.set_failed(
                self.queue, proc.doc,
                lifecycle.error_document(message=proc.reason))
        return lifecycle.set_killed(self.queue, proc.doc, proc.reason or (
            "job process vanished (exit code %s) without an outcome"
            % getattr(event, "returncode", None)))

    def completed_job(self, proc, after, outcomes):
        """A job's completion was written (``after`` is None if its lease
        was lost meanwhile): journal it later, enqueue its chain."""
        if after is not None and after["state"] == states.COMPLETE:
            self.completed.append(after)
            outcome = outcomes[proc.doc["_id"]] or {}
            dependency.enqueue_chain(self.queue, after,
                                     outcome.get("chain") or [], self.log)
        self.report(proc, after, outcomes[proc.doc["_id"]])

    def report(self, proc, after, outcome=None):
        """Tell the event stream and the log how a job ended: the run's one
        "done execution" record is the job process's (``logged`` in its
        ``outcome``) if it names the state the job ended in, else it is
        written here; the worker's own line goes to the console only. A
        job whose removal was requested while it ran moves to the journal
        now."""
        if after is None:
            lifecycle.settle_interrupted(self.queue, proc.doc["_id"],
                                         self.log)
            return
        state = after["state"]
        self.events.add(events.job_event("%s_job" % state, after))
        if state in lifecycle.DONE_LEVELS and \
                (outcome or {}).get("logged") != state:
            lifecycle.log_done(after)
        elif state == states.COMPLETE:
            self.log.info("job [%s] %s complete after %.2f s", after["_id"],
                          after["name"], after.get("runtime") or 0.0,
                          extra=CONSOLE_ONLY)
        else:
            # lost (pending again) is the worker's business, not the job's
            lost = state == states.PENDING
            self.log.log(
                logging.WARNING if lost else lifecycle.DONE_LEVELS.get(
                    state, logging.ERROR),
                "job [%s] %s %s after %.2f s: %s", after["_id"],
                after["name"], "lost its worker" if lost else state,
                after.get("runtime") or 0.0,
                (after.get("last_error") or {}).get("exception"),
                extra=None if lost else CONSOLE_ONLY)
        if lifecycle.journal_removed(self.queue, after):
            self.events.add(events.job_event("remove_job", after))

    def journal(self):
        """Move the jobs completed since the last call to the journal, all
        at once."""
        if self.completed:
            lifecycle.journal_many(self.queue, self.completed)
            record_runtime(self.queue.sys.cookie, self.completed)
            self.completed = []
