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

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa.contracts import Job as JobModel
from nexa.contracts import JobError, JobEvent, JobOptions, JobState, JobType
from nexa.ids import new_id
from nexa_gateway.db import Job, JobLabel, utcnow
from nexa_gateway.db import JobEvent as JobEventRow
from nexa_gateway.errors import ApiError, conflict, not_found

TERMINAL = ("completed", "failed", "cancelled")


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


def to_contract(row: Job, events: list[JobEventRow] | None = None) -> JobModel:
    error = None
    if row.error_code:
        error = JobError(code=row.error_code, message=row.error_message or "", retryable=row.error_retryable)
    return JobModel(
        job_id=row.id,
        job_type=JobType(row.job_type),
        status=JobState(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=row.result,
        logs_uri=f"/v1/jobs/{row.id}/logs",
        artifacts_uri=row.artifacts_uri,
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


def submit_job(
    session: Session, tenant_id: str, job_type: JobType, spec: JobOptions, idempotency_key: str | None
) -> Submitted:
    """Create a pending job, or return the job an earlier submission with the same key created."""
    key = idempotency_key or spec.idempotency_key
    body = spec.model_dump(mode="json")
    digest = spec_hash(body)
    if key is not None:
        existing = _by_idempotency_key(session, tenant_id, key)
        if existing is not None:
            return _repeat(existing, job_type, digest)
    now = utcnow()
    row = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        job_type=job_type.value,
        status="pending",
        spec=body,
        spec_hash=digest,
        idempotency_key=key,
        priority=spec.priority,
        labels=dict(spec.labels),
        meta=dict(spec.metadata),
        gpus=spec.resources.gpus,
        gpu_type=spec.resources.gpu_type,
        tier=spec.resources.tier,
        max_retries=spec.max_retries,
        timeout_seconds=spec.timeout_seconds,
        created_at=now,
        updated_at=now,
    )
    try:
        # A savepoint, so that losing the race on the idempotency key only undoes this insert.
        with session.begin_nested():
            session.add(row)
            session.flush()
            for k, v in spec.labels.items():
                session.add(JobLabel(job_id=row.id, key=k, value=v, tenant_id=tenant_id))
            add_event(session, row.id, "created", f"{job_type.value} job submitted")
            session.flush()
    except IntegrityError:
        if key is None:
            raise
        existing = _by_idempotency_key(session, tenant_id, key)
        if existing is None:
            raise
        return _repeat(existing, job_type, digest)
    return Submitted(job=to_contract(row), created=True)


def _by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def _repeat(existing: Job, job_type: JobType, digest: str) -> Submitted:
    if existing.job_type != job_type.value or existing.spec_hash != digest:
        raise conflict(
            "idempotency_conflict",
            f"idempotency key was already used for job {existing.id} with a different request",
        )
    return Submitted(job=to_contract(existing), created=False)


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
    return to_contract(row, list_events(session, job_id) if with_events else None)


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
    return [to_contract(r) for r in rows[:limit]], next_cursor


def cancel_job(session: Session, tenant_id: str, job_id: str) -> tuple[JobModel, str | None]:
    """Cancel a pending or running job; returns the job and the type when it just finished."""
    row = get_job_row(session, tenant_id, job_id)
    if row.status == "cancelled":
        return to_contract(row, list_events(session, job_id)), None
    if row.status in ("completed", "failed"):
        raise conflict("job_finished", f"job {job_id} already {row.status}; nothing to cancel")
    now = utcnow()
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == row.status, Job.attempt == row.attempt)
        .values(
            status="cancelled", cancel_requested=True, finished_at=now, updated_at=now, lease_expires_at=None
        )
        .returning(Job.id)
    ).scalar_one_or_none()
    if changed is None:
        # Lost a race with a worker or the reaper; answer with whatever state won.
        session.expire(row)
        row = get_job_row(session, tenant_id, job_id)
        if row.status != "cancelled":
            raise conflict("job_finished", f"job {job_id} already {row.status}; nothing to cancel")
        return to_contract(row, list_events(session, job_id)), None
    add_event(session, job_id, "cancelled", "cancelled by the user", row.attempt)
    session.flush()
    session.expire(row)
    row = get_job_row(session, tenant_id, job_id)
    return to_contract(row, list_events(session, job_id)), row.job_type


def count_by_state(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(select(Job.job_type, Job.status, func.count()).group_by(Job.job_type, Job.status))
    return [(t, s, int(n)) for t, s, n in rows]
