"""Reading, listing, cancelling and deleting jobs; their events and their log stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints

from nexa.contracts import Deletion, ErrorBody, Job, JobEvent, JobList, JobState, JobType
from nexa_gateway.deps import CurrentPrincipal, StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.routes.artifacts import ForceQuery
from nexa_gateway.services import deletion
from nexa_gateway.services.jobs import parse_label_filters

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
spec_router = APIRouter(tags=["spec"])

JobIdPath = Annotated[str, Path(min_length=1, max_length=64, description="A `job_…` id.")]


@router.get("", response_model=JobList)
def list_jobs(
    principal: CurrentPrincipal,
    state: StateDep,
    type: Annotated[JobType | None, Query(description="Only jobs of this type.")] = None,
    status: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    label: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]],
        Query(max_length=16, description="`key=value`; repeat to require several."),
    ] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobList:
    """List the caller's jobs, newest first."""
    items, next_cursor = state.backend.list_jobs(
        principal.tenant_id,
        job_type=type,
        status=status,
        labels=parse_label_filters(label),
        limit=limit,
        cursor=cursor,
    )
    return JobList(items=items, next_cursor=next_cursor)


@router.get("/{job_id}", response_model=Job)
async def get_job(job_id: JobIdPath, principal: CurrentPrincipal, state: StateDep) -> Response:
    """A job's status, result and events."""
    body = await state.backend.get_json(principal.tenant_id, job_id)
    return Response(body, media_type="application/json")


@spec_router.get("/status/{job_id}", response_model=Job, name="spec_status")
async def spec_status(job_id: JobIdPath, principal: CurrentPrincipal, state: StateDep) -> Response:
    """A job's status (SPEC path)."""
    body = await state.backend.get_json(principal.tenant_id, job_id)
    return Response(body, media_type="application/json")


@router.post("/{job_id}/cancel", response_model=Job)
def cancel_job(job_id: JobIdPath, principal: CurrentPrincipal, state: StateDep) -> Job:
    """Cancel a pending or running job; a running worker is told to stop at its next heartbeat."""
    return state.backend.cancel(principal.tenant_id, job_id)


@router.delete(
    "/{job_id}",
    response_model=Deletion,
    responses={501: {"model": ErrorBody, "description": "`not_supported`: cluster mode (NexaJobs)."}},
)
def delete_job(
    job_id: JobIdPath, principal: CurrentPrincipal, state: StateDep, force: ForceQuery = False
) -> Deletion:
    """Delete a finished job: its output artifacts (as `DELETE /v1/artifacts/{id}` would), logs and events.

    The bill keeps its usage. 409 `job_not_finished` while it is pending or running; standalone only.
    """
    with state.db.session() as session:
        done = deletion.delete_job(session, state, principal.tenant_id, job_id, force=force)
    state.job_changed([job_id])
    return done


@router.get("/{job_id}/events", response_model=list[JobEvent])
def job_events(job_id: JobIdPath, principal: CurrentPrincipal, state: StateDep) -> list[JobEvent]:
    """The job's timeline: created, claimed, requeued, completed …"""
    return state.backend.events(principal.tenant_id, job_id)


def parse_last_event_id(raw: str | None) -> int:
    """The sequence number a reconnecting client saw last (0 for a fresh stream)."""
    if raw is None or raw.strip() == "":
        return 0
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ApiError(
            400, "bad_request", "Last-Event-ID must be a log sequence number", field="Last-Event-ID"
        )
    return int(text)


@router.get(
    "/{job_id}/logs",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events, one per log line."}
    },
)
def job_logs(
    job_id: JobIdPath,
    request: Request,
    principal: CurrentPrincipal,
    state: StateDep,
    follow: Annotated[bool, Query(description="Keep the stream open until the job ends.")] = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> StreamingResponse:
    """Stream log lines as Server-Sent Events; reconnect with Last-Event-ID to resume without gaps."""
    after = parse_last_event_id(last_event_id)
    stream = state.backend.log_stream(request, principal.tenant_id, job_id, after=after, follow=follow)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
