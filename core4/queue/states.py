"""Job states, as explicit names, and the groups the queue works with."""

PENDING = "pending"
RUNNING = "running"
COMPLETE = "complete"
DEFERRED = "deferred"
FAILED = "failed"
INACTIVE = "inactive"
ERROR = "error"
KILLED = "killed"

ALL = (PENDING, RUNNING, COMPLETE, DEFERRED, FAILED, INACTIVE, ERROR, KILLED)
#: waiting for their ``query_at`` to pass before they run again
WAITING = (DEFERRED, FAILED)
#: ended without success; they stay in the queue until restarted or removed
STOPPED = (KILLED, INACTIVE, ERROR)
#: a worker may claim jobs in these states (once ``query_at`` has passed)
CLAIMABLE = (PENDING, DEFERRED, FAILED)
#: states after which a job never runs again by itself
FINAL = (COMPLETE, INACTIVE, ERROR, KILLED)
