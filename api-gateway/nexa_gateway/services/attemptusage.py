"""Usage of attempts the gateway did not lease: cluster engine pods, whose result records it accepts.

A standalone worker's usage comes with its ``complete``/``fail`` report and is recorded against
the job's row. An engine pod's comes in the result record it writes through the gateway (with its
attempt token); there is no job row in cluster mode, so the job is named as a ``UsageSubject``
(its type and GPU type, which the price book needs) and the usage is recorded by the same
``record_usage``: once per job, attempt and kind, chained into the tenant's ledger.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa.contracts.workers import UsageRecord
from nexa_gateway.db import Job, UsageSubject
from nexa_gateway.errors import ApiError
from nexa_gateway.services.queue import record_usage

MAX_KINDS = 64


def usage_of_record(value: Any) -> list[UsageRecord]:
    """A result record's ``usage`` (``{kind: amount}``) as records; ValueError when it is not one."""
    if value is None:
        return []
    if not isinstance(value, dict) or len(value) > MAX_KINDS:
        raise ValueError(f"usage must be an object of at most {MAX_KINDS} kinds")
    try:
        return [UsageRecord(kind=str(k), amount=v) for k, v in sorted(value.items())]
    except ValidationError as exc:
        raise ValueError(f"usage: {exc.errors()[0].get('msg', 'invalid')}") from exc


def ensure_subject(
    session: Session, subject_id: str, tenant_id: str, job_type: str, gpu_type: str | None
) -> None:
    """Name ``subject_id`` for the bill unless a job row or an earlier subject already does; a subject
    or job of another tenant by that id is refused (409), never shared."""
    known = session.get(UsageSubject, subject_id)
    other = (
        known.tenant_id
        if known is not None
        else session.scalar(select(Job.tenant_id).where(Job.id == subject_id))
    )
    if other is not None and other != tenant_id:
        raise ApiError(409, "usage_subject_conflict", f"{subject_id} is billed to another tenant")
    if other is not None:
        return
    try:
        with session.begin_nested():
            session.add(
                UsageSubject(id=subject_id, tenant_id=tenant_id, job_type=job_type, gpu_type=gpu_type)
            )
            session.flush()
    except IntegrityError:
        pass  # another replica named it first: the same facts


def record_attempt_usage(
    session: Session,
    *,
    tenant_id: str,
    job_id: str,
    attempt: int,
    job_type: str,
    gpu_type: str | None,
    usage: list[UsageRecord],
) -> list[UsageRecord]:
    """Record an accepted attempt's usage once; returns what was newly recorded."""
    if not usage:
        return []
    ensure_subject(session, job_id, tenant_id, job_type, gpu_type)
    return record_usage(session, tenant_id, job_id, attempt, usage)
