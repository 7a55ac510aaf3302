"""Condition types and reasons the operator writes: a fixed list, so users and tests can match on them."""

from __future__ import annotations

from datetime import datetime

from nexa.contracts.nexajob import Condition

# Condition types
JOB_CREATED = "JobCreated"
POD_SCHEDULED = "PodScheduled"
RETRYING = "Retrying"
SUSPENDED = "Suspended"
COMPLETE = "Complete"
FAILED = "Failed"
CANCELLED = "Cancelled"
ENDPOINT_READY = "EndpointReady"
RESULT_READ = "ResultRead"
ADMITTED = "Admitted"  # only with Kueue: whether Kueue let the current attempt's Job start

# Reasons
R_JOB_CREATED = "JobCreated"
R_SCHEDULED = "Scheduled"
R_UNSCHEDULABLE = "Unschedulable"
R_SUCCEEDED = "Succeeded"
R_FATAL_EXIT = "FatalExitCode"
R_DEADLINE = "DeadlineExceeded"
R_RETRIES_EXHAUSTED = "RetriesExhausted"
R_ATTEMPT_FAILED = "AttemptFailed"
R_RETRY_STARTED = "RetryStarted"  # Retrying turns False: the next attempt's Job exists
R_JOB_DELETED = "JobDeleted"
R_RESULT_READ = "ResultRead"
R_RESULT_MISSING = "ResultMissing"
R_RESULT_UNAVAILABLE = "ResultUnavailable"
R_INVALID_SPEC = "InvalidSpec"
R_CANCELLED = "CancelledByUser"
R_SUSPENDED = "SuspendedByUser"
R_RESUMED = "Resumed"
R_ENDPOINT_READY = "EndpointReady"
R_ENDPOINT_PENDING = "EndpointPending"
R_ENDPOINT_FAILED = "EndpointFailed"
R_WAITING_FOR_ADMISSION = "WaitingForAdmission"
R_ADMITTED = "AdmittedByKueue"


# Condition changes that deserve a Warning Event (the rest are Normal).
_WARNING_WHEN_TRUE = {FAILED, RETRYING}
_WARNING_REASONS = {
    R_UNSCHEDULABLE,
    R_RESULT_MISSING,
    R_RESULT_UNAVAILABLE,
    R_JOB_DELETED,
    R_ENDPOINT_FAILED,
    R_FATAL_EXIT,
    R_DEADLINE,
    R_RETRIES_EXHAUSTED,
    R_INVALID_SPEC,
}


def event_type(type_: str, status: bool, reason: str) -> str:
    """``Warning`` or ``Normal`` for the Event that reports a condition change."""
    return "Warning" if (status and type_ in _WARNING_WHEN_TRUE) or reason in _WARNING_REASONS else "Normal"


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """``conditions`` with ``type_`` set; its transition time moves only when its status changes."""
    value = "True" if status else "False"
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        since = cond.last_transition_time if cond.status == value else now
        out.append(
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                lastTransitionTime=since,
                observedGeneration=generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                lastTransitionTime=now,
                observedGeneration=generation,
            )
        )
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, if set."""
    return next((c for c in conditions if c.type == type_), None)
