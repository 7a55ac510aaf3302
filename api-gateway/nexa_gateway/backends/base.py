"""The line between the API and where jobs live; nothing above it knows which backend runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from fastapi import Request

from nexa.contracts import Job, JobEvent, JobOptions, JobState, JobType
from nexa.contracts.billing import CostEstimate


class JobBackend(Protocol):
    async def submit(
        self,
        tenant_id: str,
        job_type: JobType,
        spec: JobOptions,
        idempotency_key: str | None,
        estimate: CostEstimate | None = None,
    ) -> tuple[Job, bool]:
        """Create a job (True) or return the one this idempotency key already made (False);
        a created job keeps ``estimate``, what it was expected to cost."""
        ...

    def get(self, tenant_id: str, job_id: str) -> Job:
        """The job with its events; ApiError 404 when the tenant has no such job."""
        ...

    async def get_json(self, tenant_id: str, job_id: str) -> bytes:
        """``get`` serialized as JSON: the hot path of status polling, which backends may cache."""
        ...

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
        """A page of the tenant's jobs, newest first, and the cursor of the next page."""
        ...

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        """Cancel a pending or running job; idempotent; 409 for a finished one."""
        ...

    def events(self, tenant_id: str, job_id: str) -> list[JobEvent]:
        """The job's timeline."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (background tasks, connections)."""
        ...

    def log_stream(
        self, request: Request, tenant_id: str, job_id: str, *, after: int, follow: bool
    ) -> AsyncIterator[str]:
        """Server-Sent Events of the job's log lines after sequence number ``after``."""
        ...
