"""The NexaJob state machine as tables: observed cluster state in, plan out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nexa.contracts import AuditSpec, ContainerSpec, DeploySpec, JobType
from nexa.contracts.common import JobOptions
from nexa.contracts.nexajob import EXIT_FATAL, nexajob_object
from nexa_operator.config import OperatorConfig
from nexa_operator.reconcile import Plan, ResultLookup, decide, status_patch

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(retry_base_seconds=10, retry_max_seconds=60)
NAME = "job-" + "c" * 26


def nexajob(
    spec: JobOptions | None = None,
    job_type: JobType = JobType.audit,
    status: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    obj = nexajob_object(
        job_id="job_" + "c" * 26,
        tenant_id="t",
        namespace="ns",
        job_type=job_type,
        spec=spec or AuditSpec(dataset_uri="ds_" + "a" * 26, max_retries=1),
    )
    obj["metadata"].update(uid="u1", generation=1, resourceVersion="5")
    obj["spec"].update(extra)
    if status is not None:
        obj["status"] = status
    return obj


def running_status(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    status = {
        "phase": "Pending",
        "attempts": attempt,
        "jobName": f"{NAME}-a{attempt}",
        "conditions": [{"type": "JobCreated", "status": "True", "reason": "JobCreated", "message": ""}],
    }
    status.update(extra)
    return status


def job(*conditions: tuple[str, str, str], suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{NAME}-a1"},
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions]
        },
    }


def pod(
    phase: str = "Running",
    *,
    exit_code: int | None = None,
    message: str | None = None,
    unschedulable: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if unschedulable:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code}
        if message is not None:
            terminated["message"] = message
        status["containerStatuses"] = [{"name": "engine", "state": {"terminated": terminated}}]
    return {"metadata": {"name": "p"}, "status": status}


def conds(plan: Plan) -> dict[str, tuple[str, str]]:
    assert plan.status is not None
    return {c["type"]: (c["status"], c["reason"]) for c in plan.status.get("conditions", [])}


def test_new_nexajob_creates_attempt_one() -> None:
    plan = decide(nexajob(), None, [], NOW, CONFIG)
    assert plan.create_job == 1
    assert plan.status is not None and plan.status["attempts"] == 1 and plan.status["jobName"] == f"{NAME}-a1"
    assert plan.status["phase"] == "Pending" and conds(plan)["JobCreated"] == ("True", "JobCreated")


@pytest.mark.parametrize("phase", ["Completed", "Failed", "Cancelled"])
def test_terminal_phases_stick(phase: str) -> None:
    obj = nexajob(status={"phase": phase, "attempts": 1}, cancel=True)
    assert decide(obj, None, [], NOW, CONFIG) == Plan()
    assert decide(obj, job(("Failed", "BackoffLimitExceeded", "")), [], NOW, CONFIG) == Plan()


@pytest.mark.parametrize(
    ("pods", "phase", "scheduled"),
    [
        ([], "Pending", None),
        (
            [pod("Pending", unschedulable="0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")],
            "Pending",
            ("False", "Unschedulable"),
        ),
        ([pod("Running")], "Running", ("True", "Scheduled")),
    ],
)
def test_live_attempt_phase_and_scheduling(
    pods: list[dict[str, Any]], phase: str, scheduled: tuple[str, str] | None
) -> None:
    plan = decide(nexajob(status=running_status()), job(), pods, NOW, CONFIG)
    assert plan.status is not None and plan.status["phase"] == phase
    assert conds(plan).get("PodScheduled") == scheduled
    if scheduled == ("False", "Unschedulable"):
        assert plan.events == [
            ("Warning", "Unschedulable", "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
        ]


def test_unchanged_state_writes_nothing() -> None:
    first = decide(nexajob(status=running_status()), job(), [pod("Running")], NOW, CONFIG)
    assert first.status is not None
    again = decide(nexajob(status=first.status), job(), [pod("Running")], NOW + timedelta(seconds=5), CONFIG)
    assert again.status is None and again.events == []


def test_complete_job_asks_for_the_result_then_completes() -> None:
    obj = nexajob(status=running_status())
    done = job(("Complete", "", ""))
    ask = decide(obj, done, [pod("Succeeded", exit_code=0)], NOW, CONFIG)
    assert ask.need_result and ask.status is None
    plan = decide(
        obj, done, [pod("Succeeded", exit_code=0)], NOW, CONFIG, result=ResultLookup("found", {"score": 0.9})
    )
    assert plan.status is not None and plan.status["phase"] == "Completed"
    assert plan.status["result"] == {"score": 0.9} and plan.status["progress"] == 1.0
    assert conds(plan)["Complete"] == ("True", "Succeeded")


def test_result_from_the_termination_message_needs_no_store() -> None:
    message = '{"attempt": 1, "result": {"rows": 10}}'
    plan = decide(
        nexajob(status=running_status()),
        job(("Complete", "", "")),
        [pod("Succeeded", exit_code=0, message=message)],
        NOW,
        CONFIG,
    )
    assert plan.status is not None and plan.status["result"] == {"rows": 10}


def test_unreadable_store_waits_without_finishing() -> None:
    plan = decide(
        nexajob(status=running_status()),
        job(("Complete", "", "")),
        [],
        NOW,
        CONFIG,
        result=ResultLookup("unavailable", detail="timeout"),
    )
    assert plan.status is not None and plan.status["phase"] == "Pending"
    assert conds(plan)["ResultRead"] == ("False", "ResultUnavailable") and plan.requeue_after


def test_fatal_exit_code_fails_at_once() -> None:
    message = '{"attempt": 1, "error": {"code": "dataset_not_found", "message": "no such dataset"}}'
    plan = decide(
        nexajob(status=running_status()),
        job(("Failed", "PodFailurePolicy", "Container engine exited with 3")),
        [pod("Failed", exit_code=EXIT_FATAL, message=message)],
        NOW,
        CONFIG,
    )
    assert plan.status is not None and plan.status["phase"] == "Failed"
    assert plan.status["error"] == {
        "code": "dataset_not_found",
        "message": "no such dataset",
        "retryable": False,
    }
    assert conds(plan)["Failed"] == ("True", "FatalExitCode") and plan.create_job is None


def test_deadline_fails_without_retry() -> None:
    plan = decide(nexajob(status=running_status()), job(("Failed", "DeadlineExceeded", "")), [], NOW, CONFIG)
    assert (
        plan.status is not None and plan.status["error"]["code"] == "timeout"
    )  # the same code as standalone


def test_retryable_failure_backs_off_then_starts_the_next_attempt() -> None:
    failed = job(("Failed", "BackoffLimitExceeded", ""))
    plan = decide(nexajob(status=running_status()), failed, [pod("Failed", exit_code=1)], NOW, CONFIG)
    assert plan.status is not None and plan.create_job is None
    assert plan.status["nextAttemptAt"] and plan.requeue_after == 10
    assert conds(plan)["Retrying"] == ("True", "AttemptFailed")
    waiting = nexajob(status=plan.status)
    assert decide(waiting, failed, [], NOW + timedelta(seconds=5), CONFIG).create_job is None
    later = decide(waiting, failed, [], NOW + timedelta(seconds=11), CONFIG)
    assert later.create_job == 2 and later.status is not None and later.status["attempts"] == 2


def test_retries_run_out() -> None:
    plan = decide(
        nexajob(status=running_status(2)),
        job(("Failed", "BackoffLimitExceeded", "")),
        [pod("Failed", exit_code=1)],
        NOW,
        CONFIG,
    )
    assert plan.status is not None and plan.status["phase"] == "Failed"
    assert conds(plan)["Failed"] == ("True", "RetriesExhausted")
    # kubectl's condition counts the attempts; the error's message is the cause alone, because
    # clients print it after "failed after 2 attempt(s):" and would otherwise say it twice.
    failed = next(x for x in plan.status["conditions"] if x["type"] == "Failed")
    assert failed["message"] == "attempt 2 of 2 failed: the engine exited with code 1"
    assert plan.status["error"]["message"] == "the engine exited with code 1"


def test_cancel_deletes_the_job_and_ends_cancelled() -> None:
    plan = decide(nexajob(status=running_status(), cancel=True), job(), [pod()], NOW, CONFIG)
    assert plan.delete_job == f"{NAME}-a1"
    assert plan.status is not None and plan.status["phase"] == "Cancelled"


@pytest.mark.parametrize(
    ("want", "has", "patch", "phase"), [(True, False, True, "Suspended"), (False, True, False, "Pending")]
)
def test_suspend_and_resume(want: bool, has: bool, patch: bool, phase: str) -> None:
    plan = decide(nexajob(status=running_status(), suspend=want), job(suspend=has), [], NOW, CONFIG)
    assert plan.suspend_job is patch
    assert plan.status is not None and plan.status["phase"] == phase


def test_vanished_job_of_a_live_attempt_is_retried() -> None:
    plan = decide(nexajob(status=running_status()), None, [], NOW, CONFIG)
    assert plan.status is not None and plan.status["error"]["code"] == "job_deleted"
    assert plan.status["nextAttemptAt"]


def test_invalid_spec_fails_with_a_named_reason() -> None:
    obj = nexajob()
    obj["spec"]["audit"]["ngram"] = 0
    plan = decide(obj, None, [], NOW, CONFIG)
    assert plan.status is not None and plan.status["phase"] == "Failed"
    assert conds(plan)["Failed"] == ("True", "InvalidSpec") and plan.create_job is None


def test_container_job_completes_without_a_result_record() -> None:
    spec = ContainerSpec(image="busybox", command=["true"])
    plan = decide(
        nexajob(spec, JobType.container, status=running_status()), job(("Complete", "", "")), [], NOW, CONFIG
    )
    assert plan.status is not None and plan.status["phase"] == "Completed"


def test_deploy_creates_the_endpoint_and_completes_when_ready() -> None:
    spec = DeploySpec(checkpoint_id="ckpt_" + "b" * 26)
    first = decide(nexajob(spec, JobType.deploy), None, [], NOW, CONFIG)
    assert first.create_endpoint and first.status is not None
    endpoint = {"status": {"phase": "Ready", "url": "http://x", "readyReplicas": 1}}
    done = decide(
        nexajob(spec, JobType.deploy, status=first.status), None, [], NOW, CONFIG, endpoint=endpoint
    )
    assert done.status is not None and done.status["phase"] == "Completed"
    assert done.status["result"]["url"] == "http://x"


def test_starting_the_next_attempt_clears_the_retry_time_in_the_patch() -> None:
    failed = job(("Failed", "BackoffLimitExceeded", ""))
    waiting = decide(
        nexajob(status=running_status()), failed, [pod("Failed", exit_code=1)], NOW, CONFIG
    ).status
    assert waiting is not None and "nextAttemptAt" in waiting
    started = decide(nexajob(status=waiting), failed, [], NOW + timedelta(seconds=11), CONFIG).status
    assert started is not None and "nextAttemptAt" not in started
    patch = status_patch(waiting, started)
    assert patch["nextAttemptAt"] is None and patch["attempts"] == 2


def test_no_attempt_starts_past_the_retry_budget() -> None:
    status = running_status(2, nextAttemptAt=(NOW - timedelta(seconds=1)).isoformat())
    plan = decide(nexajob(status=status), None, [], NOW, CONFIG)
    assert plan.create_job is None
    assert plan.status is not None and plan.status["phase"] == "Failed"


KUEUE = OperatorConfig(retry_base_seconds=10, retry_max_seconds=60, kueue_queue="team-a")


@pytest.mark.parametrize(
    ("suspended", "pods", "phase", "admitted"),
    [
        (True, [], "Pending", ("False", "WaitingForAdmission")),
        (False, [], "Pending", ("True", "AdmittedByKueue")),
        (False, [pod("Running")], "Running", ("True", "AdmittedByKueue")),
    ],
)
def test_kueue_admission_is_reported_and_never_done_by_the_operator(
    suspended: bool, pods: list[dict[str, Any]], phase: str, admitted: tuple[str, str]
) -> None:
    plan = decide(nexajob(status=running_status()), job(suspend=suspended), pods, NOW, KUEUE)
    assert plan.suspend_job is None
    assert plan.status is not None and plan.status["phase"] == phase
    assert conds(plan)["Admitted"] == admitted


def test_a_queued_job_waits_quietly_and_a_preempted_one_queues_again() -> None:
    queued = decide(nexajob(status=running_status()), job(suspend=True), [], NOW, KUEUE)
    assert queued.status is not None
    message = next(c["message"] for c in queued.status["conditions"] if c["type"] == "Admitted")
    assert "'team-a'" in message and f"{NAME}-a1" in message
    later = NOW + timedelta(minutes=5)
    again = decide(nexajob(status=queued.status), job(suspend=True), [], later, KUEUE)
    assert again.status is None and again.suspend_job is None and again.events == []
    running = decide(nexajob(status=queued.status), job(), [pod("Running")], later, KUEUE)
    assert running.status is not None and running.status["phase"] == "Running"
    # Kueue preempts by suspending the Job again: the NexaJob goes back to waiting, untouched.
    preempted = decide(nexajob(status=running.status), job(suspend=True), [], later, KUEUE)
    assert preempted.suspend_job is None
    assert preempted.status is not None and preempted.status["phase"] == "Pending"
    assert conds(preempted)["Admitted"] == ("False", "WaitingForAdmission")


def test_without_kueue_no_admission_condition_is_written() -> None:
    plan = decide(nexajob(status=running_status()), job(), [pod("Running")], NOW, CONFIG)
    assert "Admitted" not in conds(plan)


def test_every_condition_change_is_an_event_with_the_conditions_reason() -> None:
    """Attempt created, suspended, resumed, retrying, the next attempt, completed: one Event each, once."""
    suspended = decide(nexajob(suspend=True), None, [], NOW, CONFIG)
    assert [(t, r) for t, r, _ in suspended.events] == [
        ("Normal", "SuspendedByUser"),
        ("Normal", "JobCreated"),
    ]
    assert "attempt 1" in suspended.events[1][2]
    assert suspended.status is not None
    resumed = decide(nexajob(status=suspended.status), job(suspend=True), [], NOW, CONFIG)
    assert [(t, r) for t, r, _ in resumed.events] == [("Normal", "Resumed")]
    assert resumed.status is not None
    failed = job(("Failed", "BackoffLimitExceeded", ""))
    retrying = decide(nexajob(status=resumed.status), failed, [pod("Failed", exit_code=1)], NOW, CONFIG)
    assert [(t, r) for t, r, _ in retrying.events] == [("Warning", "AttemptFailed")]
    assert "retrying in 10s" in retrying.events[0][2]
    assert retrying.status is not None
    second = decide(nexajob(status=retrying.status), failed, [], NOW + timedelta(seconds=11), CONFIG)
    # Retrying turns False with a reason of its own; that says nothing an Event must repeat.
    assert conds(second)["Retrying"] == ("False", "RetryStarted")
    assert [(t, r) for t, r, _ in second.events] == [("Normal", "JobCreated")]
    assert "attempt 2" in second.events[0][2]
    assert second.status is not None
    running = nexajob(status=second.status)
    done = decide(
        running,
        job(("Complete", "", "")),
        [pod("Succeeded", exit_code=0)],
        NOW,
        CONFIG,
        result=ResultLookup("found", {"score": 0.9}),
    )
    assert [(t, r) for t, r, _ in done.events] == [("Normal", "ResultRead"), ("Normal", "Succeeded")]
    # Nothing changed, nothing said.
    assert done.status is not None
    assert decide(nexajob(status=done.status), job(("Complete", "", "")), [], NOW, CONFIG).events == []


def test_a_failed_job_says_so_as_a_warning() -> None:
    fatal = decide(
        nexajob(status=running_status()),
        job(("Failed", "PodFailurePolicy", "")),
        [
            pod(
                "Failed",
                exit_code=EXIT_FATAL,
                message='{"error": {"code": "invalid_spec", "message": "bad"}}',
            )
        ],
        NOW,
        CONFIG,
    )
    assert (
        fatal.events
        and fatal.events[-1][0] == "Warning"
        and fatal.events[-1][1] in {"FatalExitCode", "Failed"}
    )
