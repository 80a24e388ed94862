"""Job statuses (the seed's) and Celery's states, which are a view over them."""

from __future__ import annotations

# Job statuses, as stored in dbqueue_jobs.status.
PENDING_STATUS = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
RETRYING = "retrying"
WAITING = "waiting"
CANCELLED = "cancelled"
PAUSED = "paused"

STATUSES = (PENDING_STATUS, RUNNING, COMPLETED, FAILED, RETRYING, WAITING, CANCELLED, PAUSED)
#: Statuses a worker may claim.
CLAIMABLE = (PENDING_STATUS, RETRYING)
#: Statuses after which a job never runs again.
TERMINAL = (COMPLETED, FAILED, CANCELLED)
#: Statuses that hold a unique key.
LIVE = (PENDING_STATUS, RUNNING, RETRYING, WAITING, PAUSED)

# Celery's states.
PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"
#: dbqueue's extra state for a paused job.
PAUSED_STATE = "PAUSED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, IGNORED, REJECTED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY, PAUSED_STATE})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED, REJECTED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED, REJECTED})
ALL_STATES = frozenset(
    {PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, REVOKED, REJECTED, RETRY, IGNORED, PAUSED_STATE}
)

_STATE_OF = {
    PENDING_STATUS: PENDING,
    RUNNING: STARTED,
    COMPLETED: SUCCESS,
    FAILED: FAILURE,
    RETRYING: RETRY,
    WAITING: STARTED,
    CANCELLED: REVOKED,
    PAUSED: PAUSED_STATE,
}

#: ``error_type`` values that refine a status into Celery's IGNORED and REJECTED states.
IGNORED_MARK = "dbqueue.exceptions.Ignore"
REJECTED_MARK = "dbqueue.exceptions.Reject"


def celery_state(status: str, error_type: str | None = None) -> str:
    """Celery's state name for a job status."""
    if status == COMPLETED and error_type == IGNORED_MARK:
        return IGNORED
    if status == FAILED and error_type == REJECTED_MARK:
        return REJECTED
    return _STATE_OF.get(status, PENDING)
