"""The standalone backend: jobs in SQLite or PostgreSQL, run by pull workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request

from nexa.contracts import Job, JobEvent, JobOptions, JobState, JobType
from nexa_gateway.services import jobs as svc
from nexa_gateway.services.artifacts import check_job_inputs
from nexa_gateway.services.logstream import log_event_stream
from nexa_gateway.state import AppState


class SqlJobBackend:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def submit(
        self, tenant_id: str, job_type: JobType, spec: JobOptions, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        with self.state.db.session() as session:
            check_job_inputs(session, self.state.store, self.state.allowed_roots, tenant_id, job_type, spec)
            result = svc.submit_job(session, tenant_id, job_type, spec, idempotency_key)
        if result.created:
            self.state.metrics.jobs_submitted.labels(job_type.value).inc()
        return result.job, result.created

    def get(self, tenant_id: str, job_id: str) -> Job:
        with self.state.db.session() as session:
            return svc.get_job(session, tenant_id, job_id)

    def list_jobs(
        self,
        tenant_id: str,
        *,
        job_type: JobType | None,
        status: JobState | None,
        labels: dict[str, str],
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Job], str | None]:
        with self.state.db.session() as session:
            return svc.list_jobs(
                session,
                tenant_id,
                job_type=job_type,
                status=status,
                labels=labels,
                limit=limit,
                cursor=cursor,
            )

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        with self.state.db.session() as session:
            job, finished_type = svc.cancel_job(session, tenant_id, job_id)
        if finished_type is not None:
            self.state.metrics.jobs_finished.labels(finished_type, "cancelled").inc()
        return job

    def events(self, tenant_id: str, job_id: str) -> list[JobEvent]:
        return self.get(tenant_id, job_id).events

    def log_stream(
        self, request: Request, tenant_id: str, job_id: str, *, after: int, follow: bool
    ) -> AsyncIterator[str]:
        with self.state.db.session() as session:
            svc.get_job_row(session, tenant_id, job_id)
        return log_event_stream(self.state, request, job_id, after=after, follow=follow)
