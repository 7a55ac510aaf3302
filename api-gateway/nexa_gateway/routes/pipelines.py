"""Pipelines: submit one, watch it (status, SSE events), cancel, resume, approve a held step."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from nexa.contracts.pipelines import Pipeline, PipelineList, PipelineSpec, PipelineState
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep, TenantAdmin
from nexa_gateway.errors import ApiError
from nexa_gateway.routes.submit import IdempotencyHeader
from nexa_gateway.services import pipelines as svc
from nexa_gateway.services.jobs import parse_label_filters
from nexa_gateway.state import AppState

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])

PipelineId = Annotated[str, Path(min_length=1, max_length=64, description="A `pl_…` id.")]
StepPath = Annotated[str, Path(min_length=1, max_length=40, description="A step's name.")]
_KEEPALIVE_SECONDS = 15.0


def _standalone_only(state: AppState) -> None:
    if state.settings.backend != "sql":
        raise ApiError(
            501,
            "not_supported",
            "in cluster mode a pipeline is a NexaPipeline resource: kubectl apply it (docs/pipelines-cluster.md)",
        )


def _wake(state: AppState, pipeline_id: str) -> None:
    # The advancer waits on any change; its streams wait on the pipeline's own id.
    state.signals.notify([pipeline_id])


@router.post("", response_model=Pipeline, status_code=201)
def create_pipeline(
    body: PipelineSpec,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    response: Response,
    idempotency_key: IdempotencyHeader = None,
) -> Pipeline:
    """Submit a pipeline; its first steps start at once. A repeated idempotency key returns the first."""
    _standalone_only(state)
    try:
        pipeline, created = svc.create(
            session,
            principal.tenant_id,
            principal.key_id,
            body,
            idempotency_key,
            state.settings.max_active_pipelines_per_tenant,
        )
        session.commit()
    except IntegrityError:
        # The same idempotency key raced another request: that one's pipeline is the answer.
        session.rollback()
        pipeline, created = svc.create(
            session, principal.tenant_id, principal.key_id, body, idempotency_key, 10**9
        )
        session.commit()
    _wake(state, pipeline.pipeline_id)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/pipelines/{pipeline.pipeline_id}"
    return pipeline


@router.get("", response_model=PipelineList)
def list_pipelines(
    principal: CurrentPrincipal,
    session: SessionDep,
    status: Annotated[PipelineState | None, Query(description="Only pipelines in this state.")] = None,
    name: Annotated[str | None, Query(max_length=63, description="Only pipelines of this name.")] = None,
    label: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]],
        Query(max_length=16, description="`key=value`; repeat to require several."),
    ] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> PipelineList:
    """The caller's pipelines, newest first."""
    items, next_cursor = svc.list_pipelines(
        session,
        principal.tenant_id,
        status=status,
        name=name,
        labels=parse_label_filters(label),
        limit=limit,
        cursor=cursor,
    )
    return PipelineList(items=items, next_cursor=next_cursor)


@router.get("/{pipeline_id}", response_model=Pipeline)
def get_pipeline(pipeline_id: PipelineId, principal: CurrentPrincipal, session: SessionDep) -> Pipeline:
    """A pipeline's state and every step's: job, outputs, gate outcome, why it is where it is."""
    return svc.get(session, principal.tenant_id, pipeline_id)


@router.post("/{pipeline_id}/cancel", response_model=Pipeline)
def cancel_pipeline(
    pipeline_id: PipelineId, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> Pipeline:
    """Stop a pipeline: running steps' jobs are cancelled, steps not started are skipped."""
    pipeline, running = svc.cancel(session, principal.tenant_id, pipeline_id)
    session.commit()
    for job_id in running:
        with contextlib.suppress(ApiError):  # it finished meanwhile
            state.backend.cancel(principal.tenant_id, job_id)
    _wake(state, pipeline_id)
    return pipeline


@router.post("/{pipeline_id}/resume", response_model=Pipeline)
def resume_pipeline(
    pipeline_id: PipelineId, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> Pipeline:
    """Run a failed or cancelled pipeline on from where it stopped; finished steps are not run again."""
    _standalone_only(state)
    pipeline = svc.resume(session, principal.tenant_id, pipeline_id)
    session.commit()
    _wake(state, pipeline_id)
    return pipeline


@router.post("/{pipeline_id}/steps/{step}/approve", response_model=Pipeline)
def approve_step(
    pipeline_id: PipelineId, step: StepPath, principal: TenantAdmin, session: SessionDep, state: StateDep
) -> Pipeline:
    """Let a step that waits for an approval start (admin keys only)."""
    pipeline = svc.approve(session, principal.tenant_id, principal.key_id, pipeline_id, step)
    session.commit()
    _wake(state, pipeline_id)
    return pipeline


def _batch(state: AppState, tenant_id: str, pipeline_id: str, after: int) -> tuple[list[str], str]:
    with state.db.read() as session:
        row = svc.get_row(session, tenant_id, pipeline_id)
        events = svc.list_events(session, pipeline_id, after)
        return [e.model_dump_json() for e in events], row.status


async def _stream(
    state: AppState, request: Request, tenant_id: str, pipeline_id: str, after: int, follow: bool
) -> AsyncIterator[str]:
    last = after
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    with state.signals.subscribe(pipeline_id) as changed:
        while True:
            changed.clear()
            events, status = await run_in_threadpool(_batch, state, tenant_id, pipeline_id, last)
            for data in events:
                event = json.loads(data)
                last = int(event["seq"])
                yield f"id: {last}\nevent: {event['kind']}\ndata: {data}\n\n"
                last_sent = time.monotonic()
            if events:
                continue  # drain before deciding the stream is over
            if not follow or PipelineState(status).terminal:
                yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
                return
            if await request.is_disconnected():
                return
            quiet = time.monotonic() - last_sent
            if quiet >= _KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
                quiet = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    changed.wait(), min(_KEEPALIVE_SECONDS - quiet, state.settings.log_poll_seconds)
                )


@router.get(
    "/{pipeline_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Server-Sent Events, one per pipeline event.",
        }
    },
)
def pipeline_events(
    pipeline_id: PipelineId,
    request: Request,
    principal: CurrentPrincipal,
    state: StateDep,
    follow: Annotated[bool, Query(description="Keep the stream open until the pipeline ends.")] = True,
    after: Annotated[int, Query(ge=0, le=10**9, description="Only events after this sequence number.")] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> StreamingResponse:
    """The pipeline's timeline as Server-Sent Events (``event:`` is the kind, ``data:`` a PipelineEvent);
    ``event: end`` closes it once the pipeline has ended. Reconnect with Last-Event-ID to resume."""
    if last_event_id and last_event_id.strip().isdigit():
        after = max(after, int(last_event_id.strip()))
    with state.db.read() as session:
        svc.get_row(session, principal.tenant_id, pipeline_id)  # 404 before the stream starts
    return StreamingResponse(
        _stream(state, request, principal.tenant_id, pipeline_id, after, follow),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
