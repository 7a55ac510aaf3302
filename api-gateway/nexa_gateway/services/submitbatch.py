"""Group commit for job submissions.

Under load, many requests submit at once. Each waits on a future while one
background task writes everything queued so far in a single transaction:
one commit (one fsync on PostgreSQL) for the whole batch instead of one per
job. Every submitter is answered only after the commit that holds its job, so
a 201 always means the job is durable. A request's own bad input (an unknown
dataset, a reused idempotency key) fails that request alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from nexa.contracts import Job, JobOptions, JobType
from nexa.contracts.refs import JobReference, job_references
from nexa_gateway.errors import ApiError
from nexa_gateway.services import jobs as svc
from nexa_gateway.services.artifacts import check_job_inputs
from nexa_gateway.services.grants import tenant_access
from nexa_gateway.state import AppState
from nexa_store.access import Access

log = logging.getLogger("nexa.gateway.submit")

_MAX_BATCH = 128


@dataclass
class _Request:
    tenant_id: str
    job_type: JobType
    spec: JobOptions
    idempotency_key: str | None
    answer: asyncio.Future[tuple[Job, bool]]
    estimate: dict[str, Any] | None = None


class SubmitBatcher:
    def __init__(self, state: AppState) -> None:
        self.state = state
        # One queue and drain task per event loop: an app served from two loops (a server
        # thread and an in-process client, say) must never await a future of the other loop.
        self._drains: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[asyncio.Queue[_Request], asyncio.Task[None]]
        ] = weakref.WeakKeyDictionary()

    async def submit(
        self,
        tenant_id: str,
        job_type: JobType,
        spec: JobOptions,
        idempotency_key: str | None,
        estimate: dict[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """Queue one submission and wait until the transaction holding it committed."""
        loop = asyncio.get_running_loop()
        drain = self._drains.get(loop)
        if drain is None or drain[1].done():
            queue: asyncio.Queue[_Request] = asyncio.Queue()
            drain = (queue, loop.create_task(self._drain(queue), name="nexa-submit-batcher"))
            self._drains[loop] = drain
        answer: asyncio.Future[tuple[Job, bool]] = loop.create_future()
        await drain[0].put(_Request(tenant_id, job_type, spec, idempotency_key, answer, estimate))
        return await answer

    async def close(self) -> None:
        """Stop the drain task of the calling loop (others end with their loops)."""
        drain = self._drains.pop(asyncio.get_running_loop(), None)
        if drain is not None:
            drain[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain[1]

    async def _drain(self, queue: asyncio.Queue[_Request]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < _MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                outcomes = await run_in_threadpool(self._write, batch)
            except Exception as exc:  # the commit itself failed: nobody's job was stored
                log.exception("submission batch of %d failed", len(batch))
                for request in batch:
                    if not request.answer.done():
                        request.answer.set_exception(exc)
                continue
            for request, outcome in zip(batch, outcomes, strict=True):
                if request.answer.done():
                    continue  # the client went away; its job is stored all the same
                if isinstance(outcome, BaseException):
                    request.answer.set_exception(outcome)
                else:
                    request.answer.set_result(outcome)
            for request, outcome in zip(batch, outcomes, strict=True):
                if not isinstance(outcome, BaseException) and outcome[1]:
                    self.state.metrics.jobs_submitted.labels(request.job_type.value).inc()

    def _write(self, batch: list[_Request]) -> list[tuple[Job, bool] | ApiError]:
        state = self.state
        outcomes: list[tuple[Job, bool] | ApiError | None] = [None] * len(batch)
        accepted: list[int] = []
        with state.db.session() as session:
            checked: dict[tuple[str, tuple[JobReference, ...]], ApiError | None] = {}
            scopes: dict[str, Access] = {}
            for i, request in enumerate(batch):
                # Many submissions in a burst name the same dataset: check each once per batch.
                ident = (request.tenant_id, tuple(job_references(request.spec)))
                if ident not in checked:
                    if request.tenant_id not in scopes:
                        scopes[request.tenant_id] = tenant_access(
                            session, state.settings, state.store, request.tenant_id, state.catalog
                        )
                    try:
                        check_job_inputs(state.store, scopes[request.tenant_id], request.spec)
                        checked[ident] = None
                    except ApiError as exc:
                        checked[ident] = exc
                problem = checked[ident]
                if problem is not None:
                    outcomes[i] = problem
                else:
                    accepted.append(i)
            results = svc.submit_jobs(
                session,
                [
                    svc.NewJob(
                        batch[i].tenant_id,
                        batch[i].job_type,
                        batch[i].spec,
                        batch[i].idempotency_key,
                        batch[i].estimate,
                    )
                    for i in accepted
                ],
            )
        for i, result in zip(accepted, results, strict=True):
            outcomes[i] = result if isinstance(result, ApiError) else (result.job, result.created)
        return [o for o in outcomes if o is not None]
