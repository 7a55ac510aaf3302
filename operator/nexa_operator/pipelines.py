"""The NexaPipeline state machine, pure: the pipeline and its NexaJobs in, what to do out.

``decide_pipeline`` reads a NexaPipeline and the NexaJobs it owns (each labelled with its
step and try) and returns a ``PipelinePlan``: the NexaJobs to create, the running ones to
cancel, the status to write and the Events to post. The planner shared with the gateway
(``nexa.pipelineplan``) says which steps start; this module maps its answer onto
Kubernetes objects. It never talks to the API, so every transition is a table test.

Level-triggered and crash-safe like the NexaJob machine: a step's state is read back from
its NexaJobs on every reconcile (the status is a report, not the source of truth), NexaJob
names are deterministic per step and try (a repeat create is ``AlreadyExists``), and
children are created and cancelled *before* the status that records them is written.
What no NexaJob can tell (a step that failed before its job was made, an approval hold,
first-seen times) is carried over from the status the operator wrote before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from nexa.contracts.jobs import spec_for
from nexa.contracts.nexajob import (
    LABEL_JOB_TYPE,
    LABEL_MANAGED_BY,
    LABEL_TENANT,
    NEXAJOB_FINALIZER,
    TERMINAL_PHASES,
    Condition,
    nexajob_job_id,
    nexajob_object,
)
from nexa.contracts.nexapipeline import (
    CANCEL_ANNOTATION,
    LABEL_PIPELINE,
    LABEL_STEP,
    LABEL_TRY,
    MAX_NAME,
    NEXAPIPELINE_KIND,
    NexaPipelineFailure,
    NexaPipelineStatus,
    NexaPipelineStepStatus,
    approve_annotation,
    step_nexajob_name,
)
from nexa.contracts.pipelines import (
    PIPELINE_LABEL,
    STEP_LABEL,
    PipelineErrorCode,
    PipelineSpec,
    PipelineState,
    PipelineStep,
    StepState,
)
from nexa.ids import derived_id
from nexa.pipelineplan import MissingOutput, cacheable, evaluate_gate, order, plan, substitute
from nexa_operator import conditions as c
from nexa_operator.builders import MANAGER, POD_ANNOTATIONS, owner_reference, validated_spec

# Condition types and reasons of a NexaPipeline (a fixed list, like the NexaJob's).
WAITING_FOR_APPROVAL = "WaitingForApproval"
R_APPROVAL_NEEDED = "ApprovalNeeded"
R_NO_APPROVAL_NEEDED = "NoApprovalNeeded"
R_STEPS_COMPLETED = "StepsCompleted"
R_STEP_FAILED = "StepFailed"
R_GATE_FAILED = "GateFailed"
R_OUTPUT_MISSING = "OutputMissing"
R_STEP_REFUSED = "StepRefused"
R_INVALID_SPEC = "InvalidSpec"
_FAILURE_REASONS: dict[str, str] = {
    PipelineErrorCode.step_failed: R_STEP_FAILED,
    PipelineErrorCode.gate_failed: R_GATE_FAILED,
    PipelineErrorCode.output_missing: R_OUTPUT_MISSING,
    PipelineErrorCode.step_refused: R_STEP_REFUSED,
}
NO_CACHE_NOTE = "cluster mode keeps no step cache, so the step runs"


@dataclass
class PipelinePlan:
    """What one reconcile of a NexaPipeline should do, in this order: create, cancel, write status."""

    create: list[dict[str, Any]] = field(default_factory=list)  # NexaJobs to create
    cancel: list[str] = field(default_factory=list)  # names of running NexaJobs to cancel
    status: dict[str, Any] | None = None  # the status to write, only when it changed
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)

    @property
    def finished(self) -> bool:
        phase = (self.status or {}).get("phase")
        return phase is not None and PipelineState(phase).terminal


def pipeline_spec(pipeline: dict[str, Any]) -> PipelineSpec:
    """The NexaPipeline's spec as the contract (``spec.name`` defaults to the object's name);
    ``ValidationError`` when it is not one."""
    spec = dict(pipeline.get("spec") or {})
    spec.setdefault("name", pipeline["metadata"]["name"])
    return PipelineSpec.model_validate(spec)


def is_finished(pipeline: dict[str, Any]) -> bool:
    """True when the NexaPipeline is completed, failed or cancelled."""
    phase = (pipeline.get("status") or {}).get("phase")
    return phase in {s.value for s in PipelineState if s.terminal}


def approved_steps(pipeline: dict[str, Any]) -> set[str]:
    """Steps whose ``nexa.run/approve-<step>`` annotation is ``"true"``."""
    annotations = pipeline["metadata"].get("annotations") or {}
    spec = pipeline.get("spec") or {}
    names = [str(s.get("name")) for s in spec.get("steps") or [] if isinstance(s, dict)]
    return {n for n in names if str(annotations.get(approve_annotation(n), "")).lower() == "true"}


def cancel_requested(pipeline: dict[str, Any]) -> bool:
    annotations = pipeline["metadata"].get("annotations") or {}
    return str(annotations.get(CANCEL_ANNOTATION, "")).lower() == "true"


def children_by_step(
    pipeline: dict[str, Any], nexajobs: Iterable[dict[str, Any]]
) -> dict[str, dict[int, dict[str, Any]]]:
    """The NexaJobs this pipeline controls, by step and try. Others with its labels (left by an
    earlier NexaPipeline of the same name, not yet garbage-collected) are not its own."""
    uid = pipeline["metadata"]["uid"]
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for job in nexajobs:
        meta = job["metadata"]
        owners = meta.get("ownerReferences") or []
        if not any(o.get("uid") == uid and o.get("controller") for o in owners):
            continue
        labels = meta.get("labels") or {}
        try:
            attempt = int(labels.get(LABEL_TRY, ""))
        except ValueError:
            continue
        out.setdefault(str(labels.get(LABEL_STEP)), {})[attempt] = job
    return out


def pipeline_tenant(pipeline: dict[str, Any]) -> str | None:
    """The tenant a NexaPipeline names (its ``nexa.run/tenant`` label), as for a NexaJob's
    ``spec.tenant``: whoever may create NexaPipelines in a namespace may create NexaJobs there."""
    tenant = (pipeline["metadata"].get("labels") or {}).get(LABEL_TENANT)
    return str(tenant) if tenant else None


def build_step_nexajob(
    pipeline: dict[str, Any],
    spec: PipelineSpec,
    step: PipelineStep,
    attempt: int,
    resolved: dict[str, Any],
    *,
    tenant: str | None = None,
) -> dict[str, Any]:
    """The NexaJob that runs try ``attempt`` of ``step`` with its placeholders ``resolved``.

    The usual NexaJob mapping (``nexajob_object``) of the validated contract spec, named by
    pipeline, step and try, owned by the pipeline, labelled with both, carrying the pipeline's
    tenant, labels and pod annotations. ``ValueError``/``ValidationError`` when the resolved spec
    is not a valid job (or asks for what cluster mode cannot do).
    """
    meta = pipeline["metadata"]
    labels = dict(spec.labels)
    own = resolved.get("labels")
    if isinstance(own, dict):
        labels.update(own)
    # As the gateway does in standalone mode: the job names its pipeline and step (manifests record it).
    labels.update({PIPELINE_LABEL: meta["name"], STEP_LABEL: step.name})
    options = spec_for(step.type, {**resolved, "labels": labels})
    tenant = pipeline_tenant(pipeline) if tenant is None else tenant
    name = step_nexajob_name(meta["name"], step.name, attempt)
    # The job id only names the object in nexajob_object; the metadata is replaced below.
    obj = nexajob_object(
        job_id=derived_id("job", meta["uid"], step.name, str(attempt)),
        tenant_id=tenant or "",
        namespace=meta["namespace"],
        job_type=step.type,
        spec=options,
    )
    if not tenant:
        del obj["spec"]["tenant"]
    child_labels = {
        LABEL_PIPELINE: meta["name"],
        LABEL_STEP: step.name,
        LABEL_TRY: str(attempt),
        LABEL_JOB_TYPE: step.type.value,
        LABEL_MANAGED_BY: MANAGER,
    }
    if tenant:
        child_labels[LABEL_TENANT] = tenant
    obj["metadata"] = {
        "name": name,
        "namespace": meta["namespace"],
        "labels": child_labels,
        "finalizers": [NEXAJOB_FINALIZER],
        "ownerReferences": [owner_reference({**pipeline, "kind": NEXAPIPELINE_KIND})],
    }
    pod_annotations = (meta.get("annotations") or {}).get(POD_ANNOTATIONS)
    if pod_annotations:
        obj["metadata"]["annotations"] = {POD_ANNOTATIONS: pod_annotations}
    validated_spec(obj)  # what the NexaJob operator would refuse, refused here with the step's name
    return obj


def _phase(job: dict[str, Any]) -> str:
    return str((job.get("status") or {}).get("phase") or "Pending")


def _job_error(job: dict[str, Any]) -> str:
    error = (job.get("status") or {}).get("error") or {}
    if error.get("code"):
        return f"{error['code']}: {error.get('message', '')}".rstrip(": ")
    return "no reason given"


class _Decision:
    """One reconcile's working state: the step statuses being rebuilt and the plan being filled."""

    def __init__(
        self, pipeline: dict[str, Any], spec: PipelineSpec, now: datetime, refused: dict[str, str]
    ) -> None:
        self.pipeline = pipeline
        self.refused = refused
        self.spec = spec
        self.now = now
        self.before = NexaPipelineStatus.model_validate(pipeline.get("status") or {})
        # Pinned at the first reconcile: relabelling the pipeline later moves none of its steps.
        self.tenant = self.before.tenant or pipeline_tenant(pipeline)
        self.plan = PipelinePlan()
        self.steps: dict[str, NexaPipelineStepStatus] = {}
        self.failure: NexaPipelineFailure | None = None

    def step_status(self, step: PipelineStep) -> NexaPipelineStepStatus:
        old = self.before.step(step.name)
        status = NexaPipelineStepStatus(name=step.name, type=step.type)
        if old is not None:
            status.start_time, status.completion_time = old.start_time, old.completion_time
            status.reason = old.reason
        return status

    def fail_step(self, status: NexaPipelineStepStatus, code: PipelineErrorCode, reason: str) -> None:
        status.state = StepState.failed
        status.reason = reason
        status.completion_time = status.completion_time or self.now
        if self.failure is None:
            self.failure = NexaPipelineFailure(
                code=code.value, message=f"step {status.name}: {reason}", step=status.name
            )

    def event(self, type_: str, reason: str, message: str) -> None:
        self.plan.events.append((type_, reason, message))


def _observe(d: _Decision, step: PipelineStep, tries: dict[int, dict[str, Any]]) -> NexaPipelineStepStatus:
    """A step's status from its NexaJobs (and, where it has none, from the last status)."""
    old = d.before.step(step.name)
    if not tries and old is not None and (old.state.finished or old.state is StepState.waiting_approval):
        # Failed before a job was made, skipped, or held: no NexaJob records it.
        return old.model_copy(deep=True)
    status = d.step_status(step)
    if not tries:
        return status
    attempt = max(tries)
    job = tries[attempt]
    meta = job["metadata"]
    status.tries = attempt
    status.nexa_job = meta["name"]
    status.job_id = nexajob_job_id(meta["name"], meta.get("uid", ""))
    status.start_time = status.start_time or d.now
    phase = _phase(job)
    if phase not in TERMINAL_PHASES:
        status.state = StepState.running
        return status
    if phase == "Completed":
        result = dict((job.get("status") or {}).get("result") or {})
        status.outputs = result
        status.completion_time = status.completion_time or d.now
        if step.gate is not None:
            status.gate = evaluate_gate(step.gate, result)
            if not status.gate.passed:
                if old is None or old.state is not StepState.failed:
                    d.event("Warning", R_GATE_FAILED, f"step {step.name}: gate failed: {status.gate.reason}")
                d.fail_step(status, PipelineErrorCode.gate_failed, f"gate failed: {status.gate.reason}")
                return status
        status.state = StepState.completed
        status.reason = f"NexaJob {meta['name']} completed"
        if old is None or old.state is not StepState.completed:
            d.event("Normal", "StepCompleted", f"step {step.name} completed ({meta['name']})")
        return status
    if phase == "Cancelled":
        # Cancelled by hand (the pipeline's own cancels end it first): the pipeline cannot go on.
        status.state = StepState.cancelled
        status.reason = f"NexaJob {meta['name']} was cancelled"
        status.completion_time = status.completion_time or d.now
        if d.failure is None:
            d.failure = NexaPipelineFailure(
                code=PipelineErrorCode.step_failed.value,
                message=f"step {step.name}: {status.reason}",
                step=step.name,
            )
        return status
    # Failed: another try while the step has retries left.
    if attempt < step.retries + 1:
        return status  # pending: _start makes try attempt+1
    if old is None or old.state is not StepState.failed:
        d.event("Warning", R_STEP_FAILED, f"step {step.name}: {meta['name']} failed: {_job_error(job)}")
    d.fail_step(
        status,
        PipelineErrorCode.step_failed,
        f"NexaJob {meta['name']} failed ({_job_error(job)}) after {attempt} tr{'y' if attempt == 1 else 'ies'}",
    )
    return status


def _start(d: _Decision, step: PipelineStep, status: NexaPipelineStepStatus, approved: set[str]) -> None:
    """Make the step's next NexaJob, or fail the step when its spec cannot become one."""
    done = {n: s for n, s in d.steps.items() if s.state.done}
    try:
        resolved = substitute(
            step.spec,
            {n: s.outputs or {} for n, s in done.items()},
            {n: s.job_id or "" for n, s in done.items()},
            d.spec.parameters,
        )
    except MissingOutput as exc:
        d.event("Warning", R_OUTPUT_MISSING, f"step {step.name}: {exc}")
        d.fail_step(status, PipelineErrorCode.output_missing, str(exc))
        return
    attempt = status.tries + 1
    try:
        child = build_step_nexajob(d.pipeline, d.spec, step, attempt, resolved, tenant=d.tenant)
        refusal = d.refused.get(child["metadata"]["name"])
        if refusal is not None:
            raise ValueError(f"the API server refused NexaJob {child['metadata']['name']}: {refusal}")
    except (ValueError, ValidationError) as exc:
        message = _validation_text(exc)
        d.event("Warning", R_STEP_REFUSED, f"step {step.name}: {message}")
        d.fail_step(status, PipelineErrorCode.step_refused, message)
        return
    d.plan.create.append(child)
    status.state = StepState.running
    status.tries = attempt
    status.nexa_job = child["metadata"]["name"]
    status.job_id = None  # known once the NexaJob exists (its id derives from its uid)
    status.outputs = None
    status.gate = None
    status.start_time = status.start_time or d.now
    status.completion_time = None
    reason = f"NexaJob {status.nexa_job} created (try {attempt} of {step.retries + 1})"
    if step.approval and step.name in approved:
        reason += f"; approved by annotation {approve_annotation(step.name)}"
    if attempt == 1 and cacheable(step):
        reason += f"; {NO_CACHE_NOTE}"
    status.reason = reason
    kind = "StepRetrying" if attempt > 1 else "StepStarted"
    d.event("Normal", kind, f"step {step.name}: {reason}")


def _validation_text(exc: ValueError | ValidationError) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "spec"
            parts.append(f"spec.{loc}: {err['msg']}")
        return "; ".join(parts)[:1000]
    return str(exc)[:1000]


def _cancel_all(d: _Decision, children: dict[str, dict[int, dict[str, Any]]], reason: str) -> None:
    """Cancel every running NexaJob of the pipeline; running steps end cancelled, waiting ones skipped."""
    for status in d.steps.values():
        if status.state is StepState.running:
            status.state = StepState.cancelled
            status.reason = reason
            status.completion_time = status.completion_time or d.now
        elif status.state in (StepState.pending, StepState.waiting_approval):
            status.state = StepState.skipped
            status.reason = reason
    for tries in children.values():
        for job in tries.values():
            if _phase(job) not in TERMINAL_PHASES and not (job.get("spec") or {}).get("cancel"):
                d.plan.cancel.append(job["metadata"]["name"])


def decide_pipeline(
    pipeline: dict[str, Any],
    nexajobs: Iterable[dict[str, Any]],
    now: datetime,
    refused: dict[str, str] | None = None,
) -> PipelinePlan:
    """What to do for ``pipeline`` given the NexaJobs labelled with its name.

    ``refused``: NexaJobs (by name) the API server would not create, with its message; their
    steps fail (``step_refused``) instead of being created again. Finished pipelines
    (completed, failed, cancelled) plan nothing. The returned status is None when it would
    not change.
    """
    if is_finished(pipeline):
        return PipelinePlan()
    meta = pipeline["metadata"]
    before = NexaPipelineStatus.model_validate(pipeline.get("status") or {})
    try:
        if len(meta["name"]) > MAX_NAME:
            raise ValueError(
                f"a NexaPipeline's name has at most {MAX_NAME} characters (its NexaJobs' labels carry it)"
            )
        spec = pipeline_spec(pipeline)
    except (ValueError, ValidationError) as exc:
        return _invalid(pipeline, before, _validation_text(exc), now)
    d = _Decision(pipeline, spec, now, dict(refused or {}))
    children = children_by_step(pipeline, nexajobs)
    approved = approved_steps(pipeline)
    names = order(spec)
    for name in names:
        d.steps[name] = _observe(d, spec.step(name), children.get(name, {}))

    if cancel_requested(pipeline):
        _cancel_all(d, children, f"cancelled by annotation {CANCEL_ANNOTATION}")
        d.failure = NexaPipelineFailure(
            code=PipelineErrorCode.cancelled.value, message=f"cancelled by annotation {CANCEL_ANNOTATION}"
        )
        d.event("Normal", "Cancelled", "pipeline cancelled")
        return _finish(d, before, PipelineState.cancelled)

    # Retries first: a failed try whose step has retries left is pending, and plan() starts it.
    # Starting a step can fail it (a missing output, a refused spec), which may stop the
    # pipeline: plan again until nothing changes.
    for _ in range(len(names) + 1):
        states = {n: s.state for n, s in d.steps.items()}
        moves = plan(spec, states, approved)
        if d.failure is not None and any(s.state is StepState.running for s in d.steps.values()):
            _cancel_all(d, children, f"step {d.failure.step} failed")
            return _finish(d, before, PipelineState.failed)
        for name in moves.hold:
            status = d.steps[name]
            status.state = StepState.waiting_approval
            status.reason = f'waiting for the annotation {approve_annotation(name)}: "true"'
            d.event(
                "Normal", R_APPROVAL_NEEDED, f"step {name} waits for approval ({approve_annotation(name)})"
            )
        for name in moves.skip:
            d.steps[name].state = StepState.skipped
            d.steps[name].reason = f"not run: step {d.failure.step if d.failure else '?'} failed"
        if not moves.start:
            return _finish(d, before, moves.state)
        for name in moves.start:
            _start(d, spec.step(name), d.steps[name], approved)
    return _finish(d, before, plan(spec, {n: s.state for n, s in d.steps.items()}, approved).state)


def _invalid(
    pipeline: dict[str, Any], before: NexaPipelineStatus, message: str, now: datetime
) -> PipelinePlan:
    status = before.model_copy(deep=True)
    status.phase = PipelineState.failed
    status.error = NexaPipelineFailure(code="invalid_spec", message=message)
    status.completion_time = status.completion_time or now
    status.conditions = c.set_condition(
        status.conditions,
        c.FAILED,
        True,
        R_INVALID_SPEC,
        message,
        now,
        pipeline["metadata"].get("generation"),
    )
    status.observed_generation = pipeline["metadata"].get("generation")
    result = PipelinePlan(events=[("Warning", R_INVALID_SPEC, message)])
    result.status = _changed(before, status)
    return result


def _current(steps: list[NexaPipelineStepStatus], failure: NexaPipelineFailure | None) -> str | None:
    now = [s.name for s in steps if s.state in (StepState.running, StepState.waiting_approval)]
    if now:
        return ",".join(now)
    return failure.step if failure is not None else None


def _finish(d: _Decision, before: NexaPipelineStatus, state: PipelineState) -> PipelinePlan:
    """Write the rebuilt steps and the pipeline's phase and conditions into the plan."""
    generation = d.pipeline["metadata"].get("generation")
    status = NexaPipelineStatus(
        phase=state,
        steps=list(d.steps.values()),
        error=d.failure if state.terminal and state is not PipelineState.completed else None,
        conditions=list(before.conditions),
        start_time=before.start_time or d.now,
        completion_time=(before.completion_time or d.now) if state.terminal else None,
        observed_generation=generation,
        tenant=d.tenant,
    )
    status.current_step = _current(status.steps, status.error)
    holding = [s.name for s in status.steps if s.state is StepState.waiting_approval]
    conds: list[Condition] = status.conditions
    conds = c.set_condition(
        conds,
        WAITING_FOR_APPROVAL,
        bool(holding),
        R_APPROVAL_NEEDED if holding else R_NO_APPROVAL_NEEDED,
        ", ".join(holding),
        d.now,
        generation,
    )
    if state is PipelineState.completed:
        conds = c.set_condition(
            conds, c.COMPLETE, True, R_STEPS_COMPLETED, "every step completed", d.now, generation
        )
        d.event("Normal", "Completed", "every step completed")
    elif state is PipelineState.failed and status.error is not None:
        reason = _FAILURE_REASONS.get(status.error.code, R_STEP_FAILED)
        conds = c.set_condition(conds, c.FAILED, True, reason, status.error.message, d.now, generation)
    elif state is PipelineState.cancelled and status.error is not None:
        conds = c.set_condition(
            conds, c.CANCELLED, True, c.R_CANCELLED, status.error.message, d.now, generation
        )
    status.conditions = conds
    d.plan.status = _changed(before, status)
    return d.plan


def _changed(before: NexaPipelineStatus, after: NexaPipelineStatus) -> dict[str, Any] | None:
    old, new = dump(before), dump(after)
    return None if json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True) else new


def dump(status: NexaPipelineStatus) -> dict[str, Any]:
    """A status as the JSON the status subresource stores."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
