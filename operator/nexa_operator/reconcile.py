"""The NexaJob state machine, pure: what was observed in, what to do out.

``decide`` reads a NexaJob, the Kubernetes Job of its current attempt (or None),
that Job's pods, and (when asked for) the attempt's result, and returns a
``Plan``: objects to create or change, the status to write, Events to emit, and
when to look again. It never talks to the API, so every transition is a table
test. Terminal phases stick: a Completed, Failed or Cancelled NexaJob plans nothing.

Crash safety (the operator may die between any two writes): the plan's objects
are created *before* the status that records them, every object name is
deterministic per attempt (a repeat create is ``AlreadyExists`` and means done),
and the status is written with the resourceVersion it was decided from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from nexa.contracts import ErrorCode, JobType
from nexa.contracts.nexajob import (
    ENGINE_CONTAINER,
    EXIT_FATAL,
    TERMINAL_PHASES,
    JobFailure,
    NexaJobStatus,
    nexajob_job_id,
    percent,
)
from nexa_operator import conditions as c
from nexa_operator.builders import job_name, pod_annotations, validated_spec
from nexa_operator.config import OperatorConfig

ResultState = Literal["found", "missing", "unavailable"]


@dataclass(frozen=True)
class ResultLookup:
    """What reading an attempt's result gave: found (with the result), missing, or store unavailable."""

    state: ResultState
    result: dict[str, Any] | None = None
    detail: str = ""


@dataclass
class Plan:
    """What one reconcile should do, in this order: create/patch objects, then write status."""

    create_job: int | None = None  # attempt number whose Job to create
    delete_job: str | None = None
    suspend_job: bool | None = None  # set the current Job's spec.suspend to this
    create_endpoint: bool = False
    need_result: bool = False  # read the current attempt's result and decide again
    status: dict[str, Any] | None = None  # the status to write, only when it changed
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None


def is_terminal(nexajob: dict[str, Any]) -> bool:
    """True when the NexaJob is Completed, Failed or Cancelled."""
    return (nexajob.get("status") or {}).get("phase") in TERMINAL_PHASES


def read_status(nexajob: dict[str, Any]) -> NexaJobStatus:
    """The NexaJob's status as a model (an empty one before the operator first wrote it)."""
    return NexaJobStatus.model_validate(nexajob.get("status") or {})


def dump_status(status: NexaJobStatus) -> dict[str, Any]:
    """A status as the JSON the status subresource stores."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def status_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning status ``before`` into ``after``: fields that went away become null."""
    patch = dict(after)
    for key in before:
        if key not in after:
            patch[key] = None
    return patch


def retry_delay(attempt: int, config: OperatorConfig) -> float:
    """Seconds before the attempt after ``attempt``: exponential, capped."""
    return float(min(config.retry_max_seconds, config.retry_base_seconds * 2 ** max(0, attempt - 1)))


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def termination_message(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The engine's JSON termination message from a finished pod, if it wrote one."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != ENGINE_CONTAINER:
            continue
        terminated = (status.get("state") or {}).get("terminated") or {}
        text = terminated.get("message")
        if not text:
            return None
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None
    return None


def exit_code(pod: dict[str, Any]) -> int | None:
    """The engine container's exit code once it terminated."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == ENGINE_CONTAINER:
            code = ((status.get("state") or {}).get("terminated") or {}).get("exitCode")
            return int(code) if code is not None else None
    return None


def unschedulable_message(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's explanation when the attempt's pod cannot be placed on any node."""
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                return str(cond.get("message") or "no node fits the pod")
    return None


def _running(pods: list[dict[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Running" for p in pods)


class _Builder:
    """Accumulates the next status and the Events that go with it."""

    def __init__(self, nexajob: dict[str, Any], now: datetime) -> None:
        self.before = dump_status(read_status(nexajob))
        self.status = read_status(nexajob)
        self.now = now
        self.generation = nexajob["metadata"].get("generation")
        self.plan = Plan()

    def cond(self, type_: str, ok: bool, reason: str, message: str = "") -> None:
        """Set a condition; a change that says something (true, or with a message) is also an Event."""
        before = c.get_condition(self.status.conditions, type_)
        self.status.conditions = c.set_condition(
            self.status.conditions, type_, ok, reason, message, self.now, self.generation
        )
        value = "True" if ok else "False"
        changed = before is None or (before.status, before.reason, before.message) != (value, reason, message)
        if changed and (ok or message):
            self.event(c.event_type(type_, ok, reason), reason, message or f"{type_}: {value}")

    def event(self, type_: str, reason: str, message: str) -> None:
        self.plan.events.append((type_, reason, message))

    def finish(self, phase: Literal["Completed", "Failed", "Cancelled"], reason: str, message: str) -> None:
        self.status.phase = phase
        self.status.completion_time = self.now
        self.status.next_attempt_at = None
        # How it ended, not the engine's last word while it ran.
        self.status.progress_message = message[:256]
        if phase == "Completed":
            self.status.progress = 1.0
            self.status.progress_percent = percent(1.0)
            self.cond(c.COMPLETE, True, reason, message)
        elif phase == "Failed":
            self.cond(c.FAILED, True, reason, message)
        else:
            self.cond(c.CANCELLED, True, reason, message)

    def fail(
        self, code: str, reason: str, message: str, *, retryable: bool = False, condition: str | None = None
    ) -> None:
        """End Failed. ``condition`` is what kubectl shows when it says more than the error's own message
        (which clients print after "failed after N attempts:", so it does not say so again)."""
        self.status.error = JobFailure(code=str(code), message=message, retryable=retryable)
        self.finish("Failed", reason, condition or message)

    def done(self) -> Plan:
        self.status.observed_generation = self.generation
        after = dump_status(self.status)
        if after != self.before:
            self.plan.status = after
        return self.plan


def _start_attempt(b: _Builder, nexajob: dict[str, Any], attempt: int) -> None:
    name = job_name(nexajob["metadata"]["name"], attempt)
    b.plan.create_job = attempt
    b.status.attempts = attempt
    b.status.job_name = name
    b.status.next_attempt_at = None
    b.status.phase = "Suspended" if nexajob["spec"].get("suspend") else "Pending"
    if nexajob["spec"].get("suspend"):
        # Said now, not on the Job's first event: one status write per new attempt, not two.
        b.cond(c.SUSPENDED, True, c.R_SUSPENDED, "spec.suspend is true")
    if b.status.start_time is None:
        b.status.start_time = b.now
    b.cond(c.JOB_CREATED, True, c.R_JOB_CREATED, f"created Job {name} for attempt {attempt}")
    if c.get_condition(b.status.conditions, c.RETRYING):
        b.cond(c.RETRYING, False, c.R_RETRY_STARTED, "")


def _next_attempt(b: _Builder, nexajob: dict[str, Any], max_retries: int) -> None:
    """Start the attempt after the current one, never past ``1 + max_retries`` attempts."""
    if b.status.attempts >= 1 + max_retries:
        b.fail(
            ErrorCode.retries_exhausted, c.R_RETRIES_EXHAUSTED, f"all {1 + max_retries} attempts were used"
        )
        return
    _start_attempt(b, nexajob, b.status.attempts + 1)


def _attempt_failed(
    b: _Builder,
    nexajob: dict[str, Any],
    options_retries: int,
    code: str,
    message: str,
    config: OperatorConfig,
) -> None:
    """A retryable failure of the current attempt: schedule the next one, or fail when none is left."""
    attempt = b.status.attempts
    if attempt >= 1 + options_retries:
        b.fail(
            code,
            c.R_RETRIES_EXHAUSTED,
            message,
            retryable=False,
            condition=f"attempt {attempt} of {1 + options_retries} failed: {message}",
        )
        return
    delay = retry_delay(attempt, config)
    b.status.error = JobFailure(code=str(code), message=message, retryable=True)
    b.status.next_attempt_at = b.now + timedelta(seconds=delay)
    b.status.phase = "Pending"
    b.cond(
        c.RETRYING, True, c.R_ATTEMPT_FAILED, f"attempt {attempt} failed: {message}; retrying in {delay:g}s"
    )
    b.plan.requeue_after = delay


def decide(
    nexajob: dict[str, Any],
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    now: datetime,
    config: OperatorConfig,
    *,
    result: ResultLookup | None = None,
    endpoint: dict[str, Any] | None = None,
) -> Plan:
    """The next step for a NexaJob given what the cluster shows (pure; see the module docstring)."""
    if is_terminal(nexajob):
        return Plan()
    b = _Builder(nexajob, now)
    spec = nexajob["spec"]
    try:
        job_type, options = validated_spec(nexajob)
        pod_annotations(nexajob)
    except (ValidationError, ValueError, KeyError) as exc:
        b.fail(
            ErrorCode.invalid_spec, c.R_INVALID_SPEC, f"the spec is not a valid {spec.get('type')} job: {exc}"
        )
        return b.done()

    if spec.get("cancel"):
        if job is not None and not job["metadata"].get("deletionTimestamp"):
            b.plan.delete_job = job["metadata"]["name"]
        b.finish("Cancelled", c.R_CANCELLED, "cancelled by the user")
        return b.done()

    if job_type is JobType.deploy:
        return _decide_deploy(b, nexajob, options.timeout_seconds, endpoint)

    status = b.status
    if status.attempts == 0:
        _start_attempt(b, nexajob, 1)
        return b.done()

    if job is None:
        if status.next_attempt_at is not None:
            wait = (status.next_attempt_at - now).total_seconds()
            if wait > 0:
                b.plan.requeue_after = wait
                return b.done()
            _next_attempt(b, nexajob, options.max_retries)
            return b.done()
        # The Job of a live attempt vanished (deleted by hand, or never created before a
        # crash that came after the status write): the attempt is lost, retry it.
        if status.job_name == job_name(nexajob["metadata"]["name"], status.attempts) and c.get_condition(
            status.conditions, c.JOB_CREATED
        ):
            b.cond(c.JOB_CREATED, False, c.R_JOB_DELETED, f"Job {status.job_name} disappeared")
            _attempt_failed(
                b,
                nexajob,
                options.max_retries,
                ErrorCode.job_deleted,
                f"Job {status.job_name} was deleted",
                config,
            )
            return b.done()
        _start_attempt(b, nexajob, status.attempts)
        return b.done()

    if job["metadata"].get("deletionTimestamp"):
        b.plan.requeue_after = 1.0
        return b.done()

    if status.next_attempt_at is not None:
        # The previous attempt's Job is still here while we wait to start the next one.
        wait = (status.next_attempt_at - now).total_seconds()
        if wait > 0:
            b.plan.requeue_after = wait
            return b.done()
        _next_attempt(b, nexajob, options.max_retries)
        return b.done()

    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return _completed(b, nexajob, job_type, pods, result, options.max_retries, config)

    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if failed:
        reason = str(failed.get("reason") or "")
        detail = str(failed.get("message") or reason or "the Job failed")
        message = _failure_message(pods) or detail
        if reason == "PodFailurePolicy" or any(exit_code(p) == EXIT_FATAL for p in pods):
            b.fail(_failure_code(pods, ErrorCode.fatal_exit_code), c.R_FATAL_EXIT, message)
        elif reason == "DeadlineExceeded":
            b.fail(
                ErrorCode.timeout,
                c.R_DEADLINE,
                f"the attempt ran past timeout_seconds={options.timeout_seconds}",
            )
        else:
            _attempt_failed(
                b,
                nexajob,
                options.max_retries,
                _failure_code(pods, ErrorCode.attempt_failed),
                message,
                config,
            )
        return b.done()

    # Still going: suspended, waiting for a node, or running.
    want_suspend = bool(spec.get("suspend"))
    job_suspended = bool((job.get("spec") or {}).get("suspend"))
    if want_suspend and not job_suspended:
        b.plan.suspend_job = True
    elif not want_suspend and job_suspended and not config.kueue_queue:
        b.plan.suspend_job = False
    if want_suspend:
        status.phase = "Suspended"
        b.cond(c.SUSPENDED, True, c.R_SUSPENDED, "spec.suspend is true")
        return b.done()
    if c.get_condition(status.conditions, c.SUSPENDED):
        b.cond(c.SUSPENDED, False, c.R_RESUMED, "spec.suspend is false: resumed")
    if config.kueue_queue and _waiting_for_kueue(b, job, config.kueue_queue):
        return b.done()
    blocked = unschedulable_message(pods)
    if blocked is not None:
        b.cond(c.POD_SCHEDULED, False, c.R_UNSCHEDULABLE, blocked)
        status.phase = "Pending"
    elif _running(pods):
        b.cond(c.POD_SCHEDULED, True, c.R_SCHEDULED, "")
        status.phase = "Running"
    else:
        status.phase = "Pending"
    return b.done()


def _waiting_for_kueue(b: _Builder, job: dict[str, Any], queue: str) -> bool:
    """Report Kueue's admission of the current Job; True while it still waits.

    Kueue owns ``spec.suspend`` of a queued Job: it unsuspends on admission and
    suspends again on preemption, so the operator only reports what it sees.
    """
    name = job["metadata"]["name"]
    if (job.get("spec") or {}).get("suspend"):
        b.status.phase = "Pending"
        b.cond(
            c.ADMITTED,
            False,
            c.R_WAITING_FOR_ADMISSION,
            f"Job {name} is queued in Kueue LocalQueue {queue!r} and starts when Kueue admits it",
        )
        return True
    b.cond(c.ADMITTED, True, c.R_ADMITTED, f"Kueue admitted Job {name} from LocalQueue {queue!r}")
    return False


def _failure_message(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        doc = termination_message(pod)
        error = (doc or {}).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        code = exit_code(pod)
        if code is not None and code != 0:
            return f"the engine exited with code {code}"
    return None


def _failure_code(pods: list[dict[str, Any]], default: str) -> str:
    for pod in pods:
        error = (termination_message(pod) or {}).get("error")
        if isinstance(error, dict) and error.get("code"):
            return str(error["code"])[:100]
    return default


def _completed(
    b: _Builder,
    nexajob: dict[str, Any],
    job_type: JobType,
    pods: list[dict[str, Any]],
    result: ResultLookup | None,
    max_retries: int,
    config: OperatorConfig,
) -> Plan:
    for pod in pods:
        doc = termination_message(pod)
        if doc is not None and isinstance(doc.get("result"), dict):
            result = ResultLookup("found", doc["result"])
            break
    if result is None:
        if job_type is JobType.container:
            result = ResultLookup("found", {"exit_code": 0})
        else:
            b.plan.need_result = True
            return b.plan
    if result.state == "found":
        b.status.result = result.result
        b.status.error = None
        b.cond(c.RESULT_READ, True, c.R_RESULT_READ, "")
        b.finish("Completed", c.R_SUCCEEDED, f"attempt {b.status.attempts} succeeded")
    elif result.state == "unavailable":
        b.cond(c.RESULT_READ, False, c.R_RESULT_UNAVAILABLE, result.detail)
        b.plan.requeue_after = config.retry_base_seconds
    else:
        job_id = nexajob_job_id(nexajob["metadata"]["name"], nexajob["metadata"].get("uid", ""))
        b.cond(c.RESULT_READ, False, c.R_RESULT_MISSING, result.detail)
        _attempt_failed(
            b,
            nexajob,
            max_retries,
            ErrorCode.result_missing,
            f"attempt {b.status.attempts} of {job_id} exited 0 but left no result",
            config,
        )
    return b.done()


def _decide_deploy(
    b: _Builder, nexajob: dict[str, Any], timeout_seconds: int, endpoint: dict[str, Any] | None
) -> Plan:
    """A deploy NexaJob creates its NexaEndpoint and completes once the endpoint is Ready."""
    status = b.status
    name = nexajob["metadata"]["name"]
    if status.attempts == 0 or endpoint is None:
        b.plan.create_endpoint = True
        if status.attempts == 0:
            status.attempts = 1
            status.start_time = b.now
            b.event("Normal", c.R_JOB_CREATED, f"created NexaEndpoint {name}")
        status.endpoint_name = name
        status.phase = "Pending"
        b.cond(c.ENDPOINT_READY, False, c.R_ENDPOINT_PENDING, "waiting for the endpoint")
        return b.done()
    ep_status = endpoint.get("status") or {}
    phase = ep_status.get("phase")
    if phase == "Ready":
        url = ep_status.get("url")
        status.result = {"endpoint": name, "url": url, "ready_replicas": ep_status.get("readyReplicas", 0)}
        b.cond(c.ENDPOINT_READY, True, c.R_ENDPOINT_READY, f"serving at {url}")
        b.finish("Completed", c.R_SUCCEEDED, f"endpoint {name} is ready at {url}")
    elif phase == "Failed":
        b.fail(ErrorCode.endpoint_failed, c.R_ENDPOINT_FAILED, f"endpoint {name} failed")
    elif status.start_time and (b.now - status.start_time).total_seconds() > timeout_seconds:
        b.fail(
            ErrorCode.endpoint_not_ready, c.R_DEADLINE, f"endpoint {name} not ready within {timeout_seconds}s"
        )
    else:
        status.phase = "Running"
        b.plan.requeue_after = 5.0
    return b.done()
