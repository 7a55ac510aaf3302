"""Submitting a job: check its inputs, create it idempotently, count it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from nexa.contracts import Job, JobOptions, JobType
from nexa_gateway.services.artifacts import check_job_inputs
from nexa_gateway.services.jobs import submit_job
from nexa_gateway.state import AppState


def submit(
    state: AppState, session: Session, tenant_id: str, job_type: JobType, spec: JobOptions, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Create the job (or return the one this idempotency key already made); True when new."""
    check_job_inputs(session, state.store, state.allowed_roots, tenant_id, job_type, spec)
    result = submit_job(session, tenant_id, job_type, spec, idempotency_key)
    session.commit()
    if result.created:
        state.metrics.jobs_submitted.labels(job_type.value).inc()
    return result.job, result.created
