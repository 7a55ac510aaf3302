"""Reading, listing and cancelling jobs; their events and their log stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from nexa.contracts import Job, JobEvent, JobList, JobState, JobType
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.services import jobs as svc
from nexa_gateway.services.logstream import log_event_stream

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
spec_router = APIRouter(tags=["spec"])

JobIdPath = Annotated[str, Path(min_length=1, max_length=64, description="A `job_…` id.")]


@router.get("", response_model=JobList)
def list_jobs(
    principal: CurrentPrincipal,
    session: SessionDep,
    type: Annotated[JobType | None, Query(description="Only jobs of this type.")] = None,
    status: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    label: Annotated[list[str], Query(description="`key=value`; repeat to require several.")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobList:
    """List the caller's jobs, newest first."""
    items, next_cursor = svc.list_jobs(
        session,
        principal.tenant_id,
        job_type=type,
        status=status,
        labels=svc.parse_label_filters(label),
        limit=limit,
        cursor=cursor,
    )
    session.commit()
    return JobList(items=items, next_cursor=next_cursor)


@router.get("/{job_id}", response_model=Job)
def get_job(job_id: JobIdPath, principal: CurrentPrincipal, session: SessionDep) -> Job:
    """A job's status, result and events."""
    job = svc.get_job(session, principal.tenant_id, job_id)
    session.commit()
    return job


@spec_router.get("/status/{job_id}", response_model=Job, name="spec_status")
def spec_status(job_id: JobIdPath, principal: CurrentPrincipal, session: SessionDep) -> Job:
    """A job's status (SPEC path)."""
    return get_job(job_id, principal, session)


@router.post("/{job_id}/cancel", response_model=Job)
def cancel_job(job_id: JobIdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep) -> Job:
    """Cancel a pending or running job; a running worker is told to stop at its next heartbeat."""
    job, finished_type = svc.cancel_job(session, principal.tenant_id, job_id)
    session.commit()
    if finished_type is not None:
        state.metrics.jobs_finished.labels(finished_type, "cancelled").inc()
    return job


@router.get("/{job_id}/events", response_model=list[JobEvent])
def job_events(job_id: JobIdPath, principal: CurrentPrincipal, session: SessionDep) -> list[JobEvent]:
    """The job's timeline: created, claimed, requeued, completed …"""
    job = svc.get_job(session, principal.tenant_id, job_id)
    session.commit()
    return job.events


def _parse_last_event_id(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 0
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise ApiError(400, "bad_request", "Last-Event-ID must be a log sequence number", field="Last-Event-ID") from exc
    if value < 0 or value > 2**62:
        raise ApiError(400, "bad_request", "Last-Event-ID out of range", field="Last-Event-ID")
    return value


@router.get(
    "/{job_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events, one per log line."}},
)
def job_logs(
    job_id: JobIdPath,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    follow: Annotated[bool, Query(description="Keep the stream open until the job ends.")] = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> StreamingResponse:
    """Stream log lines as Server-Sent Events; reconnect with Last-Event-ID to resume without gaps."""
    svc.get_job_row(session, principal.tenant_id, job_id)
    after = _parse_last_event_id(last_event_id)
    # Release the database before streaming: a stream may last hours.
    session.commit()
    session.close()
    return StreamingResponse(
        log_event_stream(state, request, job_id, after=after, follow=follow),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
