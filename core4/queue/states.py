"""Job states, as explicit names, and the groups the queue works with."""

PENDING = "pending"
RUNNING = "running"
COMPLETE = "complete"
DEFERRED = "deferred"
FAILED = "failed"
INACTIVE = "inactive"
ERROR = "error"
KILLED = "killed"
#: a job removed before it reached a final state: it is in the journal
#: only, and never runs (again)
REMOVED = "removed"

ALL = (PENDING, RUNNING, COMPLETE, DEFERRED, FAILED, INACTIVE, ERROR, KILLED)
#: waiting for their ``query_at`` to pass before they run again
WAITING = (DEFERRED, FAILED)
#: ended without success; they stay in the queue until restarted or removed
STOPPED = (KILLED, INACTIVE, ERROR)
#: a worker may claim jobs in these states (once ``query_at`` has passed)
CLAIMABLE = (PENDING, DEFERRED, FAILED)
#: states after which a job never runs again by itself
FINAL = (COMPLETE, INACTIVE, ERROR, KILLED)
#: every state a job document may have: those of the queue, and
#: :data:`REMOVED` of the journal
KNOWN = ALL + (REMOVED,)


def journaled_state(state):
    """The state a job removed in ``state`` is journaled with: its own if
    final (a completed, killed, inactive or failed-for-good job ended like
    that), else :data:`REMOVED` (it would have run, and never will)."""
    return state if state in FINAL else REMOVED
