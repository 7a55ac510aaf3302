"""Pipelines in standalone mode: their rows, the API's operations on them, and the advancer.

The state lives in the database only (``pipelines``, ``pipeline_steps``, ``pipeline_events``), so a
gateway killed mid-pipeline picks up where it was: a step's job is submitted with an idempotency
key made of the pipeline, step, run and try, so submitting it again after a crash returns the job
already made instead of running the step twice. An advance reads a pipeline, decides with the pure
planner (``nexa.pipelineplan``), submits what starts, then writes everything in one transaction
that only lands if nobody changed the pipeline meanwhile (its ``version``); a lost race is re-read
on the next pass and re-submits the same keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from nexa.contracts import Job, JobState, JobType, spec_for
from nexa.contracts.pipelines import (
    PIPELINE_LABEL,
    RESERVED_LABEL_PREFIX,
    STEP_LABEL,
    GateOutcome,
    Pipeline,
    PipelineError,
    PipelineErrorCode,
    PipelineEvent,
    PipelineEventKind,
    PipelineSpec,
    PipelineState,
    PipelineStepStatus,
    StepState,
)
from nexa.contracts.refs import job_references, referenced_artifacts
from nexa.ids import is_id, new_id
from nexa.pipelineplan import (
    MissingOutput,
    TooLong,
    cache_key,
    cacheable,
    evaluate_gate,
    order,
    plan,
    substitute,
)
from nexa_gateway.db import (
    Artifact,
    JobEstimate,
    PipelineCacheRow,
    PipelineEventRow,
    PipelineRow,
    PipelineStepRow,
    utcnow,
)
from nexa_gateway.errors import ApiError
from nexa_gateway.services import budgets
from nexa_gateway.services.artifacts import check_job_inputs
from nexa_gateway.services.defaults import with_platform_defaults
from nexa_gateway.services.grants import tenant_access
from nexa_gateway.services.jobs import decode_cursor, encode_cursor
from nexa_gateway.state import AppState
from nexa_store.base import ArtifactError

log = logging.getLogger("nexa.gateway")

ACTIVE = (PipelineState.pending.value, PipelineState.running.value, PipelineState.waiting.value)
# Result fields never copied into a step's outputs: a deploy job's endpoint key stays with the job.
SECRET_OUTPUTS = frozenset({"api_key"})
ARTIFACT_PREFIXES = ("ds", "ckpt", "ev", "dp")


# ---------------------------------------------------------------- reads


def _error(row: PipelineRow) -> PipelineError | None:
    if row.error_code is None:
        return None
    return PipelineError(code=row.error_code, message=row.error_message or "", step=row.error_step)


def _step_status(step: PipelineStepRow, job_type: JobType) -> PipelineStepStatus:
    return PipelineStepStatus(
        name=step.name,
        type=job_type,
        status=StepState(step.status),
        job_id=step.job_id,
        job_ids=list(step.job_ids or []),
        tries=step.tries,
        outputs=step.outputs,
        reason=step.reason,
        cache_key=step.cache_key,
        cached_from=step.cached_from,
        gate=GateOutcome.model_validate(step.gate) if step.gate else None,
        approved_by=step.approved_by,
        started_at=step.started_at,
        finished_at=step.finished_at,
    )


def to_contract(row: PipelineRow, steps: Iterable[PipelineStepRow]) -> Pipeline:
    spec = PipelineSpec.model_validate(row.spec)
    types = {s.name: s.type for s in spec.steps}
    return Pipeline(
        pipeline_id=row.id,
        name=row.name,
        status=PipelineState(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        runs=row.runs,
        error=_error(row),
        steps=[_step_status(s, types[s.name]) for s in sorted(steps, key=lambda s: s.position)],
        spec=spec,
        labels=dict(row.labels or {}),
    )


def _not_found(pipeline_id: str) -> ApiError:
    return ApiError(404, "pipeline_not_found", f"pipeline {pipeline_id} not found")


def get_row(session: Session, tenant_id: str, pipeline_id: str, *, lock: bool = False) -> PipelineRow:
    row = session.get(PipelineRow, pipeline_id, with_for_update=lock) if is_id(pipeline_id, "pl") else None
    if row is None or row.tenant_id != tenant_id:
        raise _not_found(pipeline_id)  # another tenant's pipeline is not found either
    return row


def _steps(session: Session, pipeline_id: str) -> list[PipelineStepRow]:
    return list(
        session.scalars(
            select(PipelineStepRow)
            .where(PipelineStepRow.pipeline_id == pipeline_id)
            .order_by(PipelineStepRow.position)
        )
    )


def get(session: Session, tenant_id: str, pipeline_id: str) -> Pipeline:
    row = get_row(session, tenant_id, pipeline_id)
    return to_contract(row, _steps(session, row.id))


def list_pipelines(
    session: Session,
    tenant_id: str,
    *,
    status: PipelineState | None,
    name: str | None,
    labels: Mapping[str, str],
    limit: int,
    cursor: str | None,
) -> tuple[list[Pipeline], str | None]:
    """Newest first. Labels are matched here, page by page, so a page may be short of ``limit``."""
    query = select(PipelineRow).where(PipelineRow.tenant_id == tenant_id)
    if status is not None:
        query = query.where(PipelineRow.status == status.value)
    if name is not None:
        query = query.where(PipelineRow.name == name)
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            (PipelineRow.created_at < at) | ((PipelineRow.created_at == at) & (PipelineRow.id < last_id))
        )
    rows = list(
        session.scalars(query.order_by(PipelineRow.created_at.desc(), PipelineRow.id.desc()).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    kept = [r for r in rows if all((r.labels or {}).get(k) == v for k, v in labels.items())]
    steps: dict[str, list[PipelineStepRow]] = {}
    if kept:
        for step in session.scalars(
            select(PipelineStepRow).where(PipelineStepRow.pipeline_id.in_([r.id for r in kept]))
        ):
            steps.setdefault(step.pipeline_id, []).append(step)
    return [to_contract(r, steps.get(r.id, [])) for r in kept], next_cursor


def list_events(session: Session, pipeline_id: str, after: int = 0, limit: int = 500) -> list[PipelineEvent]:
    rows = session.scalars(
        select(PipelineEventRow)
        .where(PipelineEventRow.pipeline_id == pipeline_id, PipelineEventRow.seq > after)
        .order_by(PipelineEventRow.seq)
        .limit(limit)
    )
    return [
        PipelineEvent(
            seq=r.seq,
            at=r.at,
            kind=PipelineEventKind(r.kind),
            step=r.step,
            job_id=r.job_id,
            message=r.message,
        )
        for r in rows
    ]


def status_of(session: Session, pipeline_id: str) -> str | None:
    return session.scalar(select(PipelineRow.status).where(PipelineRow.id == pipeline_id))


# ---------------------------------------------------------------- events


def _next_seq(session: Session, pipeline_id: str) -> int:
    last = session.scalar(
        select(func.max(PipelineEventRow.seq)).where(PipelineEventRow.pipeline_id == pipeline_id)
    )
    return (last or 0) + 1


@dataclass
class _Event:
    kind: PipelineEventKind
    step: str | None = None
    job_id: str | None = None
    message: str = ""


def _write_events(session: Session, pipeline_id: str, events: list[_Event]) -> None:
    seq = _next_seq(session, pipeline_id)
    now = utcnow()
    for i, event in enumerate(events):
        session.add(
            PipelineEventRow(
                pipeline_id=pipeline_id,
                seq=seq + i,
                at=now,
                kind=event.kind.value,
                step=event.step,
                job_id=event.job_id,
                message=event.message[:4000],
            )
        )


# ---------------------------------------------------------------- the API's changes


def refuse_reserved_labels(spec: PipelineSpec) -> None:
    """``nexa.dev/…`` labels are the platform's (a step's job gets its pipeline and step there)."""
    found = [k for k in spec.labels if k.startswith(RESERVED_LABEL_PREFIX)]
    for step in spec.steps:
        labels = step.spec.get("labels")
        if isinstance(labels, Mapping):
            found += [
                f"steps[{step.name}].spec.labels.{k}"
                for k in labels
                if str(k).startswith(RESERVED_LABEL_PREFIX)
            ]
    if found:
        raise ApiError(
            422,
            "reserved_label",
            f"labels starting with {RESERVED_LABEL_PREFIX} are set by Nexa: {', '.join(found)}",
        )


def create(
    session: Session,
    tenant_id: str,
    key_id: str | None,
    spec: PipelineSpec,
    idempotency_key: str | None,
    max_active: int = 100,
) -> tuple[Pipeline, bool]:
    """Store a new pipeline (pending; the advancer starts it). A repeated idempotency key returns the
    first pipeline when the spec is the same, 409 ``idempotency_conflict`` when it is not."""
    refuse_reserved_labels(spec)
    key = idempotency_key or spec.idempotency_key
    body = spec.model_dump(mode="json", exclude={"idempotency_key"})
    if key is not None:
        existing = session.scalar(
            select(PipelineRow).where(PipelineRow.tenant_id == tenant_id, PipelineRow.idempotency_key == key)
        )
        if existing is not None:
            if {k: v for k, v in existing.spec.items() if k != "idempotency_key"} != body:
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    f"idempotency key already used for pipeline {existing.id} with another spec",
                )
            return to_contract(existing, _steps(session, existing.id)), False
    if count_active(session, tenant_id) >= max_active:
        raise ApiError(
            429,
            "too_many_pipelines",
            f"the tenant has {max_active} unfinished pipelines, the most it may have at once; "
            "wait for some to end or cancel them",
        )
    now = utcnow()
    row = PipelineRow(
        id=new_id("pl"),
        tenant_id=tenant_id,
        name=spec.name,
        status=PipelineState.pending.value,
        spec=spec.model_dump(mode="json"),
        labels=dict(spec.labels),
        idempotency_key=key,
        created_by=key_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    positions = {name: i for i, name in enumerate(order(spec))}
    steps = [
        PipelineStepRow(pipeline_id=row.id, name=step.name, position=positions[step.name], job_ids=[])
        for step in spec.steps
    ]
    session.add_all(steps)
    session.flush()
    _write_events(session, row.id, [_Event(PipelineEventKind.created, message=f"{len(spec.steps)} steps")])
    session.flush()
    return to_contract(row, steps), True


def _touch(row: PipelineRow) -> None:
    row.version += 1
    row.updated_at = utcnow()


def cancel(session: Session, tenant_id: str, pipeline_id: str) -> tuple[Pipeline, list[str]]:
    """Cancel a pipeline that has not finished (idempotent for a cancelled one; 409 ``pipeline_finished``
    for one that completed or failed). Returns the jobs of its running steps, for the caller to cancel."""
    row = get_row(session, tenant_id, pipeline_id, lock=True)
    steps = _steps(session, row.id)
    if row.status == PipelineState.cancelled.value:
        return to_contract(row, steps), []
    if row.status in (PipelineState.completed.value, PipelineState.failed.value):
        raise ApiError(409, "pipeline_finished", f"pipeline {pipeline_id} already {row.status}")
    running: list[str] = []
    now = utcnow()
    events = []
    for step in steps:
        if step.status == StepState.running.value and step.job_id:
            running.append(step.job_id)
            step.status, step.reason, step.finished_at = (
                StepState.cancelled.value,
                "the pipeline was cancelled",
                now,
            )
            events.append(
                _Event(PipelineEventKind.step_cancelled, step.name, step.job_id, "the pipeline was cancelled")
            )
        elif step.status in (StepState.pending.value, StepState.waiting_approval.value):
            step.status, step.reason = StepState.skipped.value, "the pipeline was cancelled"
    row.status = PipelineState.cancelled.value
    row.error_code, row.error_message, row.error_step = (
        PipelineErrorCode.cancelled.value,
        "cancelled by the user",
        None,
    )
    row.finished_at = now
    _touch(row)
    events.append(_Event(PipelineEventKind.cancelled, message="cancelled by the user"))
    _write_events(session, row.id, events)
    session.flush()
    return to_contract(row, steps), running


def resume(session: Session, tenant_id: str, pipeline_id: str) -> Pipeline:
    """Run a failed or cancelled pipeline again from where it stopped: steps that completed (or came
    from the cache) are kept; the failed, cancelled and skipped ones start over."""
    row = get_row(session, tenant_id, pipeline_id, lock=True)
    if row.status not in (PipelineState.failed.value, PipelineState.cancelled.value):
        raise ApiError(
            409,
            "pipeline_not_resumable",
            f"pipeline {pipeline_id} is {row.status}; only failed or cancelled ones resume",
        )
    steps = _steps(session, row.id)
    again = []
    for step in steps:
        if not StepState(step.status).done:
            again.append(step.name)
            step.status, step.reason, step.tries = StepState.pending.value, None, 0
            step.gate, step.outputs, step.started_at, step.finished_at = None, None, None, None
            step.cache_key, step.cached_from = None, None
            step.approved_by = None  # a step that needs an approval needs a new one to run again
    row.runs += 1
    row.status = PipelineState.running.value
    row.error_code = row.error_message = row.error_step = None
    row.finished_at = None
    _touch(row)
    _write_events(
        session, row.id, [_Event(PipelineEventKind.resumed, message=f"run {row.runs}: {', '.join(again)}")]
    )
    session.flush()
    return to_contract(row, steps)


def approve(session: Session, tenant_id: str, key_id: str, pipeline_id: str, step_name: str) -> Pipeline:
    """Let a step held for approval start (409 ``step_not_waiting`` unless it waits for one)."""
    row = get_row(session, tenant_id, pipeline_id, lock=True)
    step = session.get(PipelineStepRow, (row.id, step_name))
    if step is None:
        raise ApiError(404, "step_not_found", f"pipeline {pipeline_id} has no step {step_name!r}")
    if step.status != StepState.waiting_approval.value or step.approved_by is not None:
        raise ApiError(
            409, "step_not_waiting", f"step {step_name!r} is {step.status}, not waiting for an approval"
        )
    step.approved_by = key_id
    if row.status == PipelineState.waiting.value:
        row.status = PipelineState.running.value  # back into the advancer's polls
    _touch(row)
    _write_events(
        session, row.id, [_Event(PipelineEventKind.step_approved, step_name, message=f"approved by {key_id}")]
    )
    session.flush()
    return to_contract(row, _steps(session, row.id))


# ---------------------------------------------------------------- the advancer


# What the advancer polls: a ``waiting`` pipeline has nothing running and moves only when a step is
# approved (which makes it ``running`` again), so it is not read on every pass.
MOVING = (PipelineState.pending.value, PipelineState.running.value)


def active_ids(session: Session, after: str = "", limit: int = 500) -> list[str]:
    """A page of the pipelines that can move, by id (page on with ``after`` = the last id)."""
    return list(
        session.scalars(
            select(PipelineRow.id)
            .where(PipelineRow.status.in_(MOVING), PipelineRow.id > after)
            .order_by(PipelineRow.id)
            .limit(limit)
        )
    )


def count_active(session: Session, tenant_id: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(PipelineRow.tenant_id == tenant_id, PipelineRow.status.in_(ACTIVE))
        )
        or 0
    )


def fail_stuck(session: Session, pipeline_id: str, message: str) -> bool:
    """Fail a pipeline the advancer cannot move (it raised on every try), with the reason."""
    row = session.get(PipelineRow, pipeline_id, with_for_update=True)
    if row is None or row.status not in ACTIVE:
        return False
    row.status = PipelineState.failed.value
    row.error_code, row.error_message, row.error_step = (
        PipelineErrorCode.advance_failed.value,
        message[:2000],
        None,
    )
    row.finished_at = utcnow()
    _touch(row)
    _write_events(session, row.id, [_Event(PipelineEventKind.failed, message=message[:2000])])
    session.flush()
    return True


@dataclass
class _Step:
    """A step as the advance sees and changes it (written back at the end)."""

    name: str
    status: StepState
    job_id: str | None
    job_ids: list[str]
    tries: int
    outputs: dict[str, Any] | None
    reason: str | None
    cache_key: str | None
    cached_from: str | None
    gate: dict[str, Any] | None
    approved_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    changed: bool = False

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, value)
        self.changed = True


@dataclass
class _Snapshot:
    id: str
    tenant_id: str
    version: int
    runs: int
    spec: PipelineSpec
    steps: dict[str, _Step]
    events: list[_Event] = field(default_factory=list)
    cache: list[PipelineCacheRow] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    error: PipelineError | None = None


def _snapshot(session: Session, pipeline_id: str) -> _Snapshot | None:
    row = session.get(PipelineRow, pipeline_id)
    if row is None or row.status not in ACTIVE:
        return None
    steps = {
        s.name: _Step(
            name=s.name,
            status=StepState(s.status),
            job_id=s.job_id,
            job_ids=list(s.job_ids or []),
            tries=s.tries,
            outputs=s.outputs,
            reason=s.reason,
            cache_key=s.cache_key,
            cached_from=s.cached_from,
            gate=s.gate,
            approved_by=s.approved_by,
            started_at=s.started_at,
            finished_at=s.finished_at,
        )
        for s in _steps(session, pipeline_id)
    }
    return _Snapshot(
        row.id, row.tenant_id, row.version, row.runs, PipelineSpec.model_validate(row.spec), steps
    )


def _outputs(result: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (result or {}).items() if k not in SECRET_OUTPUTS}


def _fail(
    snap: _Snapshot, step: _Step, code: PipelineErrorCode, message: str, *, cancelled: bool = False
) -> None:
    step.set(
        status=StepState.cancelled if cancelled else StepState.failed, reason=message, finished_at=utcnow()
    )
    snap.events.append(_Event(PipelineEventKind.step_failed, step.name, step.job_id, message))
    if snap.error is None:
        snap.error = PipelineError(code=code.value, message=f"step {step.name!r}: {message}", step=step.name)


def _job_finished(snap: _Snapshot, step: _Step, job: Job) -> bool:
    """Move a running step on from its job's end; True when it must be submitted again (a retry)."""
    definition = snap.spec.step(step.name)
    now = utcnow()
    if job.status is JobState.completed:
        outputs = _outputs(job.result)
        if definition.gate is not None:
            outcome = evaluate_gate(definition.gate, outputs)
            step.set(gate=outcome.model_dump(mode="json"))
            if not outcome.passed:
                step.set(outputs=outputs)
                _fail(snap, step, PipelineErrorCode.gate_failed, f"gate did not hold: {outcome.reason}")
                return False
        step.set(
            status=StepState.completed,
            outputs=outputs,
            finished_at=now,
            reason=step.gate["reason"] if step.gate else step.reason,  # the gate, or why it was not cached
        )
        snap.events.append(_Event(PipelineEventKind.step_completed, step.name, job.job_id, step.reason or ""))
        if step.cache_key is not None:
            snap.cache.append(
                PipelineCacheRow(
                    tenant_id=snap.tenant_id,
                    cache_key=step.cache_key,
                    job_id=job.job_id,
                    pipeline_id=snap.id,
                    step=step.name,
                    outputs=outputs,
                )
            )
        return False
    error = f"{job.error.code}: {job.error.message}" if job.error else job.status.value
    if job.status is JobState.failed and step.tries < definition.retries + 1:
        snap.events.append(
            _Event(
                PipelineEventKind.step_retrying, step.name, job.job_id, f"try {step.tries} failed ({error})"
            )
        )
        return True
    _fail(snap, step, PipelineErrorCode.step_failed, f"job {job.job_id} {job.status.value}: {error}")
    return False


def _input_digests(state: AppState, spec: Any) -> dict[str, str] | str:
    """A content digest per reference the spec names (an artifact's files as its manifest lists them),
    or, when one names no artifact (a path, a URI, a hub model: contents Nexa does not hash, which may
    change under the same name), why the step cannot be cached. Call after the references were
    checked for the tenant."""
    digests: dict[str, str] = {}
    artifacts = {ref.field: artifact_id for ref, artifact_id in referenced_artifacts(spec)}
    for ref in job_references(spec):
        artifact_id = artifacts.get(ref.field)
        if artifact_id is None:
            return f"not cached: {ref.field} names {ref.value[:200]!r}, whose contents Nexa does not hash"
        try:
            manifest = state.store.read_manifest(artifact_id, verify=False)
        except ArtifactError as exc:
            raise ApiError(
                422, "artifact_unreadable", f"{ref.field}: {artifact_id} cannot be read: {exc}"
            ) from exc
        files = sorted((f.path, f.sha256) for f in manifest.files)
        digests[ref.field] = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return digests


@dataclass(frozen=True)
class _Hit:
    job_id: str
    pipeline_id: str
    step: str
    outputs: dict[str, Any]


def _cached(session: Session, tenant_id: str, key: str) -> _Hit | None:
    row = session.get(PipelineCacheRow, (tenant_id, key))
    if row is None:
        return None
    hit = _Hit(row.job_id, row.pipeline_id, row.step, dict(row.outputs))
    named = [
        v
        for v in hit.outputs.values()
        if isinstance(v, str) and is_id(v) and v.split("_", 1)[0] in ARTIFACT_PREFIXES
    ]
    if named:
        present = set(
            session.scalars(
                select(Artifact.id).where(Artifact.tenant_id == tenant_id, Artifact.id.in_(named))
            )
        )
        if len(present) < len(set(named)):
            return None  # an output was deleted since: run the step again
    return hit


def _spent_estimates(session: Session, job_ids: list[str]) -> int:
    if not job_ids:
        return 0
    total = 0
    for estimate in session.scalars(select(JobEstimate.estimate).where(JobEstimate.job_id.in_(job_ids))):
        total += int((estimate or {}).get("total_cents") or 0)
    return total


@dataclass
class _Prepared:
    job_type: JobType
    spec: Any
    key: str | None
    hit: _Hit | None
    estimate: Any
    not_cached: str | None = None  # why a cacheable step could not be cached


def _prepare(state: AppState, snap: _Snapshot, step: _Step) -> _Prepared:
    """The step's job spec with placeholders filled, its cache key and any cache hit, and its
    estimate (raises ``MissingOutput``, ``ValidationError`` or ``ApiError``)."""
    definition = snap.spec.step(step.name)
    done = {name: s for name, s in snap.steps.items() if s.status.done}
    body = substitute(
        definition.spec,
        {name: s.outputs or {} for name, s in done.items()},
        {name: s.job_id or s.cached_from or "" for name, s in done.items()},
        snap.spec.parameters,
    )
    body["labels"] = {
        **snap.spec.labels,
        **dict(body.get("labels") or {}),
        PIPELINE_LABEL: snap.id,
        STEP_LABEL: step.name,
    }
    spec = with_platform_defaults(spec_for(definition.type, body), state.settings)
    if snap.spec.max_cost_cents is not None:
        with state.db.read() as session:
            spent = _spent_estimates(session, [j for s in snap.steps.values() for j in s.job_ids])
        left = max(0, snap.spec.max_cost_cents - spent)
        cap = left if spec.max_cost_cents is None else min(left, spec.max_cost_cents)
        spec = spec.model_copy(update={"max_cost_cents": cap})
    key = None
    hit = None
    not_cached = None
    with state.db.read() as session:
        access = tenant_access(session, state.settings, state.store, snap.tenant_id, state.catalog)
        # The tenant's references first, as a submission checks them: nothing of another tenant is
        # read (not even for a digest), and a cache hit is no way around the check.
        check_job_inputs(state.store, access, spec)
        if cacheable(definition):
            digests = _input_digests(state, spec)
            if isinstance(digests, str):
                not_cached = digests
            else:
                key = cache_key(definition.type, spec.model_dump(mode="json"), digests)
                hit = _cached(session, snap.tenant_id, key)
        estimate = None
        if hit is None:
            estimate = budgets.check(
                session,
                state.store,
                state.settings.prices(),
                snap.tenant_id,
                definition.type,
                spec,
                None,
                state.catalog,
                access,
            )
    return _Prepared(definition.type, spec, key, hit, estimate, not_cached)


async def _start(state: AppState, snap: _Snapshot, step: _Step) -> None:
    """Start a step: reuse a cached run, or submit its job under a key that makes a resubmission after
    a crash return the same job."""
    try:
        prepared = await run_in_threadpool(_prepare, state, snap, step)
    except MissingOutput as exc:
        _fail(snap, step, PipelineErrorCode.output_missing, str(exc))
        return
    except TooLong as exc:
        _fail(snap, step, PipelineErrorCode.step_refused, str(exc))
        return
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _fail(snap, step, PipelineErrorCode.step_refused, f"its spec does not validate: {problems}")
        return
    except ApiError as exc:
        code = (
            PipelineErrorCode.budget_exceeded
            if exc.type == "budget_exceeded"
            else PipelineErrorCode.step_refused
        )
        _fail(snap, step, code, f"{exc.type}: {exc.message}")
        return
    now = utcnow()
    if prepared.hit is not None:
        hit = prepared.hit
        step.set(
            status=StepState.cached,
            outputs=dict(hit.outputs),
            cache_key=prepared.key,
            cached_from=hit.job_id,
            reason=f"same spec and inputs as job {hit.job_id} (pipeline {hit.pipeline_id}, step {hit.step}): "
            "its outputs are reused",
            started_at=now,
            finished_at=now,
        )
        snap.events.append(_Event(PipelineEventKind.step_cached, step.name, hit.job_id, step.reason or ""))
        return
    tries = step.tries + 1
    key = f"pipeline:{snap.id}:{step.name}:{snap.runs}:{tries}"
    try:
        job, _created = await state.backend.submit(
            snap.tenant_id, prepared.job_type, prepared.spec, key, estimate=prepared.estimate
        )
    except ApiError as exc:
        _fail(snap, step, PipelineErrorCode.step_refused, f"{exc.type}: {exc.message}")
        return
    snap.submitted.append(job.job_id)
    step.set(
        status=StepState.running,
        job_id=job.job_id,
        job_ids=[*step.job_ids, job.job_id] if job.job_id not in step.job_ids else step.job_ids,
        tries=tries,
        cache_key=prepared.key,
        reason=prepared.not_cached,
        started_at=step.started_at or now,
        finished_at=None,
    )
    said = f"try {tries}" + (f"; {prepared.not_cached}" if prepared.not_cached else "")
    snap.events.append(_Event(PipelineEventKind.step_started, step.name, job.job_id, said))


def _job(state: AppState, tenant_id: str, job_id: str) -> Job | None:
    try:
        return state.backend.get(tenant_id, job_id)
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise


async def advance(state: AppState, pipeline_id: str) -> bool:
    """One pass over a pipeline: finished jobs move their steps on, ready steps start. True when
    something changed (and was written)."""
    snap = await run_in_threadpool(_read, state, pipeline_id)
    if snap is None:
        return False
    for step in snap.steps.values():
        if step.status is not StepState.running or step.job_id is None:
            continue
        job = await run_in_threadpool(_job, state, snap.tenant_id, step.job_id)
        if job is None:
            _fail(snap, step, PipelineErrorCode.step_failed, f"its job {step.job_id} was deleted")
        elif job.status.terminal and _job_finished(snap, step, job):
            await _start(state, snap, step)
    approved = {s.name for s in snap.steps.values() if s.approved_by is not None}
    decided = plan(snap.spec, {n: s.status for n, s in snap.steps.items()}, approved)
    for _ in range(len(snap.steps) + 1):  # cached steps complete at once and may ready more
        for name in decided.hold:
            snap.steps[name].set(status=StepState.waiting_approval, reason="waiting for an approval")
            snap.events.append(
                _Event(PipelineEventKind.step_waiting_approval, name, message="waiting for an approval")
            )
        for name in decided.start:
            await _start(state, snap, snap.steps[name])
        if not decided.start:
            break
        decided = plan(snap.spec, {n: s.status for n, s in snap.steps.items()}, approved)
    for name in decided.skip:
        snap.steps[name].set(status=StepState.skipped, reason="not run: an earlier step failed")
    return await run_in_threadpool(_write, state, snap, decided.state)


def _read(state: AppState, pipeline_id: str) -> _Snapshot | None:
    with state.db.read() as session:
        return _snapshot(session, pipeline_id)


def _first_failure(snap: _Snapshot) -> PipelineError | None:
    for name in order(snap.spec):
        step = snap.steps[name]
        if step.status in (StepState.failed, StepState.cancelled):
            return PipelineError(
                code=PipelineErrorCode.step_failed.value, message=f"step {name!r}: {step.reason}", step=name
            )
    return None


def _write(state: AppState, snap: _Snapshot, outcome: PipelineState) -> bool:
    changed = any(s.changed for s in snap.steps.values()) or bool(snap.events)
    with state.db.session() as session:
        row = session.get(PipelineRow, snap.id)
        status_moves = row is not None and row.status != outcome.value
        if not changed and not status_moves:
            return False
        now = utcnow()
        values: dict[str, Any] = {"version": snap.version + 1, "updated_at": now, "status": outcome.value}
        # The first failure names the pipeline's error, also while sibling steps still run.
        error = snap.error
        if error is None and outcome is PipelineState.failed:
            error = _first_failure(snap)
        if error is not None and row is not None and row.error_code is None:
            values.update(error_code=error.code, error_message=error.message, error_step=error.step)
        if outcome.terminal:
            values["finished_at"] = now
        moved = session.execute(
            update(PipelineRow)
            .where(PipelineRow.id == snap.id, PipelineRow.version == snap.version)
            .values(**values)
        )
        if getattr(moved, "rowcount", 0) != 1:
            session.rollback()
            _orphans(state, snap)
            return False
        for step in snap.steps.values():
            if not step.changed:
                continue
            session.execute(
                update(PipelineStepRow)
                .where(PipelineStepRow.pipeline_id == snap.id, PipelineStepRow.name == step.name)
                .values(
                    status=step.status.value,
                    job_id=step.job_id,
                    job_ids=step.job_ids,
                    tries=step.tries,
                    outputs=step.outputs,
                    reason=step.reason,
                    cache_key=step.cache_key,
                    cached_from=step.cached_from,
                    gate=step.gate,
                    approved_by=step.approved_by,
                    started_at=step.started_at,
                    finished_at=step.finished_at,
                )
            )
        events = list(snap.events)
        if outcome.terminal:
            kind = (
                PipelineEventKind.completed
                if outcome is PipelineState.completed
                else PipelineEventKind.failed
            )
            said = (row.error_message if row is not None else None) or values.get("error_message", "")
            message = "every step done" if outcome is PipelineState.completed else said
            events.append(_Event(kind, message=message or ""))
        _write_events(session, snap.id, events)
        for hit in snap.cache:
            session.execute(
                delete(PipelineCacheRow).where(
                    PipelineCacheRow.tenant_id == hit.tenant_id, PipelineCacheRow.cache_key == hit.cache_key
                )
            )
            session.add(hit)
        session.commit()
    return True


def _orphans(state: AppState, snap: _Snapshot) -> None:
    """Lost a race: if the pipeline was cancelled meanwhile, the jobs this pass submitted are not
    wanted (a pass that lost to another advance submitted jobs that pass recorded too: keep those)."""
    if not snap.submitted:
        return
    with state.db.read() as session:
        status = status_of(session, snap.id)
    if status != PipelineState.cancelled.value:
        return
    for job_id in snap.submitted:
        try:
            state.backend.cancel(snap.tenant_id, job_id)
        except ApiError:
            pass  # already finished
