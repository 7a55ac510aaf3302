"""Job lifecycle in the SQL backend: submit (idempotent), read, list, cancel, events.

State changes are compare-and-set UPDATEs on (status, attempt), so two parties
racing on one job (a user cancelling, a worker completing, the lease reaper)
can never both win, and terminal states stick.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa.contracts import ErrorCode, JobError, JobEvent, JobOptions, JobState, JobType
from nexa.contracts import Job as JobModel
from nexa.contracts.jobs import TERMINAL_STATES
from nexa.ids import new_id
from nexa_gateway.db import Job, JobLabel, Usage, utcnow
from nexa_gateway.db import JobEvent as JobEventRow
from nexa_gateway.errors import ApiError, conflict, not_found
from nexa_gateway.metrics import FinishedJob
from nexa_gateway.services.logarchive import archived, logs_file_uri


def spec_hash(spec: dict[str, Any]) -> str:
    """Hash of a spec without its idempotency key: two submissions are 'the same' when this matches."""
    body = {k: v for k, v in spec.items() if k != "idempotency_key"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def add_event(session: Session, job_id: str, kind: str, message: str = "", attempt: int = 0) -> None:
    """Append to a job's timeline; the per-job sequence comes from the job row itself."""
    seq = session.execute(
        update(Job).where(Job.id == job_id).values(event_seq=Job.event_seq + 1).returning(Job.event_seq)
    ).scalar_one()
    session.add(JobEventRow(job_id=job_id, seq=seq, kind=kind, message=message[:4000], attempt=attempt))


def to_contract(
    row: Job, events: list[JobEventRow] | None = None, *, logs_archived: bool = False
) -> JobModel:
    error = None
    if row.error_code:
        error = JobError(code=row.error_code, message=row.error_message or "", retryable=row.error_retryable)
    return JobModel(
        job_id=row.id,
        job_type=JobType(row.job_type),
        user_id=row.tenant_id,
        status=JobState(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=row.result,
        # Live lines stream from the API; once the job has ended they are a file in the store too.
        logs_uri=logs_file_uri(row.id) if logs_archived else f"/v1/jobs/{row.id}/logs",
        # The SPEC's "job folder": everything the job produced, listed by the API (never a server path).
        artifacts_uri=f"/v1/artifacts?job_id={row.id}",
        error=error,
        progress=row.progress,
        progress_message=row.progress_message,
        attempts=row.attempt,
        max_retries=row.max_retries,
        priority=row.priority,
        labels=dict(row.labels or {}),
        metadata=dict(row.meta or {}),
        spec=row.spec,
        events=[
            JobEvent(seq=e.seq, at=e.at, kind=e.kind, message=e.message, attempt=e.attempt)
            for e in events or []
        ],
    )


@dataclass
class Submitted:
    job: JobModel
    created: bool  # False when an idempotent repeat returned the existing job


@dataclass
class NewJob:
    """One submission in a batch."""

    tenant_id: str
    job_type: JobType
    spec: JobOptions
    idempotency_key: str | None
    estimate: dict[str, Any] | None = None  # the CostEstimate at submission, kept with a created job


def _rows(new: NewJob) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The job, its 'created' event and its labels as column-keyed rows for Core inserts."""
    spec = new.spec
    body = spec.model_dump(mode="json")
    now = utcnow()
    job_id = new_id("job")
    job = {
        "id": job_id,
        "tenant_id": new.tenant_id,
        "job_type": new.job_type.value,
        "status": "pending",
        "spec": body,
        "spec_hash": spec_hash(body),
        "idempotency_key": new.idempotency_key or spec.idempotency_key,
        "priority": spec.priority,
        "labels": dict(spec.labels),
        "metadata": dict(spec.metadata),
        "gpus": spec.resources.gpus,
        "gpu_type": spec.resources.gpu_type,
        "tier": spec.resources.tier,
        "max_retries": spec.max_retries,
        "timeout_seconds": spec.timeout_seconds,
        "attempt": 0,
        "progress": 0.0,
        "event_seq": 1,
        "created_at": now,
        "updated_at": now,
    }
    event = {
        "job_id": job_id,
        "seq": 1,
        "at": now,
        "kind": "created",
        "message": f"{new.job_type.value} job submitted",
        "attempt": 0,
    }
    labels = [
        {"job_id": job_id, "key": k, "value": v, "tenant_id": new.tenant_id} for k, v in spec.labels.items()
    ]
    return job, event, labels


def rows_for(
    tenant_id: str, job_type: JobType, spec: JobOptions
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Rows for a job the platform itself creates (a replica): no idempotency key, no estimate."""
    return _rows(NewJob(tenant_id, job_type, spec, None))


def requirement_row(job_id: str, spec: JobOptions) -> dict[str, Any]:
    """What the claim query matches a node against (``queue.claim_next_job``)."""
    return {
        "job_id": job_id,
        "cpu": spec.resources.cpu,
        "memory_gb": spec.resources.memory_gb,
        "disk_gb": spec.resources.disk_gb,
        "gpu_memory_gb": spec.resources.gpu_memory_gb,
    }


def insert_rows(
    session: Session,
    rows: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]],
    requirements: list[JobOptions],
) -> None:
    """Insert jobs the platform creates, with their requirement rows (``requirements`` in step)."""
    _insert(session, rows)
    session.connection().execute(
        insert(Job.metadata.tables["job_requirements"]),
        [requirement_row(job["id"], spec) for (job, _, _), spec in zip(rows, requirements, strict=True)],
    )
    trust = [
        {"job_id": job["id"], "min_reputation": spec.resources.min_reputation}
        for (job, _, _), spec in zip(rows, requirements, strict=True)
        if spec.resources.min_reputation is not None
    ]
    if trust:
        session.connection().execute(insert(Job.metadata.tables["job_trust"]), trust)


def spec_model(job_type: str, spec: dict[str, Any]) -> JobOptions:
    from nexa.contracts import spec_for

    return spec_for(job_type, spec)


def _created(job: dict[str, Any], event: dict[str, Any]) -> Submitted:
    attrs = {("meta" if k == "metadata" else k): v for k, v in job.items()}
    return Submitted(job=to_contract(Job(**attrs), [JobEventRow(**event)]), created=True)


def _insert(
    session: Session, rows: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]]
) -> None:
    # Core executemany, not the unit of work: submission is the gateway's hottest write.
    conn = session.connection()
    tables = Job.metadata.tables
    conn.execute(insert(tables["jobs"]), [job for job, _, _ in rows])
    conn.execute(insert(tables["job_events"]), [event for _, event, _ in rows])
    labels = [label for _, _, job_labels in rows for label in job_labels]
    if labels:
        conn.execute(insert(tables["job_labels"]), labels)


def submit_jobs(session: Session, batch: list[NewJob]) -> list[Submitted | ApiError]:
    """Create many pending jobs in the caller's transaction; idempotent repeats return the first job.

    One executemany per table for the whole batch. Only if another writer raced us
    on an idempotency key does it fall back to one savepoint per job.
    """
    from nexa_gateway.services import verification

    rows = [_rows(new) for new in batch]
    for new, (job, _, _) in zip(batch, rows, strict=True):
        if new.spec.verification is not None:
            verification.hold(job, new.spec)  # runs nowhere itself: its replicas do
    outcomes: list[Submitted | ApiError | None] = [None] * len(batch)
    keyed = {(job["tenant_id"], job["idempotency_key"]) for job, _, _ in rows if job["idempotency_key"]}
    existing: dict[tuple[str, str], Job] = {}
    if keyed:
        tenants = {t for t, _ in keyed}
        keys = {k for _, k in keyed}
        for row in session.scalars(
            select(Job).where(Job.tenant_id.in_(tenants), Job.idempotency_key.in_(keys))
        ):
            existing[(row.tenant_id, row.idempotency_key or "")] = row
    first_in_batch: dict[tuple[str, str], int] = {}
    fresh: list[int] = []
    for i, (job, _, _) in enumerate(rows):
        key = job["idempotency_key"]
        if key is None:
            fresh.append(i)
            continue
        ident = (job["tenant_id"], key)
        if ident in existing:
            outcomes[i] = _repeat_or_conflict(existing[ident], batch[i].job_type, job["spec_hash"])
        elif ident in first_in_batch:
            earlier = rows[first_in_batch[ident]][0]
            if earlier["job_type"] != job["job_type"] or earlier["spec_hash"] != job["spec_hash"]:
                outcomes[i] = _idempotency_conflict(earlier["id"])
            else:
                outcomes[i] = Submitted(
                    job=_created(earlier, rows[first_in_batch[ident]][1]).job, created=False
                )
        else:
            first_in_batch[ident] = i
            fresh.append(i)
    if fresh:
        try:
            with session.begin_nested():
                _insert(session, [rows[i] for i in fresh])
            for i in fresh:
                outcomes[i] = _created(rows[i][0], rows[i][1])
        except IntegrityError:
            # Another gateway inserted one of these keys since we looked: go one by one.
            for i in fresh:
                outcomes[i] = _submit_one(session, batch[i], rows[i])
    estimates = [
        {
            "job_id": outcome.job.job_id,
            "tenant_id": new.tenant_id,
            "estimate": new.estimate,
            "created_at": utcnow(),
        }
        for new, outcome in zip(batch, outcomes, strict=True)
        if new.estimate is not None and isinstance(outcome, Submitted) and outcome.created
    ]
    if estimates:
        session.connection().execute(insert(Job.metadata.tables["job_estimates"]), estimates)
    needs = [
        requirement_row(outcome.job.job_id, new.spec)
        for new, outcome in zip(batch, outcomes, strict=True)
        if isinstance(outcome, Submitted) and outcome.created
    ]
    if needs:  # matched by the claim query (queue.claim_next_job)
        session.connection().execute(insert(Job.metadata.tables["job_requirements"]), needs)
    trust = [
        {"job_id": outcome.job.job_id, "min_reputation": new.spec.resources.min_reputation}
        for new, outcome in zip(batch, outcomes, strict=True)
        if isinstance(outcome, Submitted)
        and outcome.created
        and new.spec.resources.min_reputation is not None
    ]
    if trust:
        session.connection().execute(insert(Job.metadata.tables["job_trust"]), trust)
    for new, outcome in zip(batch, outcomes, strict=True):
        if new.spec.verification is not None and isinstance(outcome, Submitted) and outcome.created:
            verification.start_replicas(session, outcome.job.job_id, new.tenant_id, new.job_type, new.spec)
    return [o for o in outcomes if o is not None]


def _submit_one(
    session: Session, new: NewJob, row: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]
) -> Submitted | ApiError:
    job = row[0]
    try:
        with session.begin_nested():
            _insert(session, [row])
    except IntegrityError:
        found = _by_idempotency_key(session, job["tenant_id"], job["idempotency_key"] or "")
        if found is None:
            raise
        return _repeat_or_conflict(found, new.job_type, job["spec_hash"])
    return _created(job, row[1])


def submit_job(
    session: Session, tenant_id: str, job_type: JobType, spec: JobOptions, idempotency_key: str | None
) -> Submitted:
    """Create one pending job, or return the job an earlier submission with the same key created."""
    outcome = submit_jobs(session, [NewJob(tenant_id, job_type, spec, idempotency_key)])[0]
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome


def _idempotency_conflict(job_id: str) -> ApiError:
    return conflict(
        ErrorCode.idempotency_conflict,
        f"idempotency key was already used for job {job_id} with a different request",
    )


def _repeat_or_conflict(existing: Job, job_type: JobType, digest: str) -> Submitted | ApiError:
    if existing.job_type != job_type.value or existing.spec_hash != digest:
        return _idempotency_conflict(existing.id)
    return Submitted(job=to_contract(existing), created=False)


def _by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def get_job_row(session: Session, tenant_id: str, job_id: str) -> Job:
    row = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if row is None:
        raise not_found("job", job_id)
    return row


def list_events(session: Session, job_id: str) -> list[JobEventRow]:
    return list(
        session.scalars(select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.seq))
    )


def get_job(session: Session, tenant_id: str, job_id: str, *, with_events: bool = True) -> JobModel:
    row = get_job_row(session, tenant_id, job_id)
    return to_contract(
        row,
        list_events(session, job_id) if with_events else None,
        logs_archived=bool(_archived(session, [row])),
    )


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps({"t": created_at.isoformat(), "id": job_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(data["t"]), str(data["id"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", "cursor is not one this API returned", field="cursor") from exc


def parse_label_filters(raw: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(
                422, "validation_error", f"label filter {item!r} must look like key=value", field="label"
            )
        out[key] = value
    return out


def list_jobs(
    session: Session,
    tenant_id: str,
    *,
    job_type: JobType | None,
    status: JobState | None,
    labels: dict[str, str],
    limit: int,
    cursor: str | None,
) -> tuple[list[JobModel], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if job_type is not None:
        query = query.where(Job.job_type == job_type.value)
    if status is not None:
        query = query.where(Job.status == status.value)
    for key, value in labels.items():
        query = query.where(
            Job.id.in_(
                select(JobLabel.job_id).where(
                    JobLabel.tenant_id == tenant_id, JobLabel.key == key, JobLabel.value == value
                )
            )
        )
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last_id)))
    rows = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    done = _archived(session, rows[:limit])
    return [to_contract(r, logs_archived=r.id in done) for r in rows[:limit]], next_cursor


def _archived(session: Session, rows: list[Job]) -> set[str]:
    return archived(session, [r.id for r in rows if r.status in TERMINAL_STATES])


def cancel_job(session: Session, tenant_id: str, job_id: str) -> tuple[JobModel, str | None]:
    """Cancel a pending or running job; returns the job and the type when it just finished."""
    row = get_job_row(session, tenant_id, job_id)
    if row.status == "cancelled":
        return to_contract(row, list_events(session, job_id)), None
    if row.status in ("completed", "failed"):
        raise conflict(ErrorCode.job_finished, f"job {job_id} already {row.status}; nothing to cancel")
    now = utcnow()
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == row.status, Job.attempt == row.attempt)
        .values(
            status="cancelled",
            cancel_requested=True,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
            progress_message="cancelled",
        )
        .returning(Job.id)
    ).scalar_one_or_none()
    if changed is None:
        # Lost a race with a worker or the reaper; answer with whatever state won.
        session.expire(row)
        row = get_job_row(session, tenant_id, job_id)
        if row.status != "cancelled":
            raise conflict(ErrorCode.job_finished, f"job {job_id} already {row.status}; nothing to cancel")
        return to_contract(row, list_events(session, job_id)), None
    add_event(session, job_id, "cancelled", "cancelled by the user", row.attempt)
    from nexa_gateway.services import verification

    verification.cancel_replicas(session, job_id)  # a verified job's replicas stop with it
    session.flush()
    session.expire(row)
    row = get_job_row(session, tenant_id, job_id)
    verification.replica_ended(session, row, None)  # a cancelled replica may need a successor
    return to_contract(row, list_events(session, job_id)), row.job_type


def finished_job(session: Session, row: Job) -> FinishedJob:
    """The metrics view of a job that just reached a terminal state, once its usage rows are written.

    GPU time is what workers metered as ``gpu_seconds`` over all attempts, or the GPUs
    asked for times the wall time when none was metered; a CPU job uses none.
    """
    seconds = 0.0
    if row.started_at is not None and row.finished_at is not None:
        seconds = max(0.0, (row.finished_at - row.started_at).total_seconds())
    gpu_seconds = 0.0
    if row.gpus > 0:
        # Only GPU jobs pay for this lookup; it is an index range on (job_id, attempt, kind).
        metered = session.scalar(
            select(func.sum(Usage.amount)).where(Usage.job_id == row.id, Usage.kind == "gpu_seconds")
        )
        gpu_seconds = float(metered) if metered is not None else row.gpus * seconds
    return FinishedJob(row.job_type, row.status, seconds, row.gpu_type, gpu_seconds)


def count_by_state(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(select(Job.job_type, Job.status, func.count()).group_by(Job.job_type, Job.status))
    return [(t, s, int(n)) for t, s, n in rows]
