"""The standalone backend: jobs in SQLite or PostgreSQL, run by pull workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from nexa.contracts import Job, JobEvent, JobOptions, JobState, JobType
from nexa.contracts.billing import CostEstimate
from nexa_gateway.services import jobs as svc
from nexa_gateway.services.endpointkeys import reveal
from nexa_gateway.services.logstream import log_event_stream
from nexa_gateway.services.submitbatch import SubmitBatcher
from nexa_gateway.state import AppState


class SqlJobBackend:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.batcher = SubmitBatcher(state)

    async def close(self) -> None:
        await self.batcher.close()

    async def submit(
        self,
        tenant_id: str,
        job_type: JobType,
        spec: JobOptions,
        idempotency_key: str | None,
        estimate: CostEstimate | None = None,
    ) -> tuple[Job, bool]:
        kept = estimate.model_dump(mode="json") if estimate is not None else None
        return await self.batcher.submit(tenant_id, job_type, spec, idempotency_key, kept)

    def get(self, tenant_id: str, job_id: str) -> Job:
        with self.state.db.read() as session:
            return reveal(self.state.endpoint_secret, svc.get_job(session, tenant_id, job_id))

    async def get_json(self, tenant_id: str, job_id: str) -> bytes:
        cache = self.state.jobs
        body = cache.get(tenant_id, job_id)
        if body is None:
            generation = cache.generation(job_id)
            job = await run_in_threadpool(self.get, tenant_id, job_id)
            body = job.model_dump_json().encode()
            cache.put(tenant_id, job_id, body, generation)
        return body

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
        with self.state.db.read() as session:
            found, next_cursor = svc.list_jobs(
                session,
                tenant_id,
                job_type=job_type,
                status=status,
                labels=labels,
                limit=limit,
                cursor=cursor,
            )
        return [reveal(self.state.endpoint_secret, job) for job in found], next_cursor

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        with self.state.db.session() as session:
            job, finished_type = svc.cancel_job(session, tenant_id, job_id)
            finished = (
                svc.finished_job(session, svc.get_job_row(session, tenant_id, job_id))
                if finished_type
                else None
            )
        self.state.job_changed([job_id])
        if finished is not None:
            self.state.metrics.jobs_finished.labels(finished.job_type, "cancelled").inc()
            self.state.metrics.observe_job_finished(finished)
        return job

    def events(self, tenant_id: str, job_id: str) -> list[JobEvent]:
        return self.get(tenant_id, job_id).events

    def log_stream(
        self, request: Request, tenant_id: str, job_id: str, *, after: int, follow: bool
    ) -> AsyncIterator[str]:
        with self.state.db.read() as session:
            svc.get_job_row(session, tenant_id, job_id)
        return log_event_stream(self.state, request, job_id, after=after, follow=follow)
