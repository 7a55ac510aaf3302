"""``GET /v1/workers``: the node registry (the worker protocol's own routes are in ``routes.workers``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nexa.contracts.workers import NodeAction, WorkerInfo, WorkerList
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.services import nodestatus, registry

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList)
def list_workers(principal: CurrentPrincipal, session: SessionDep, state: StateDep) -> WorkerList:
    """The nodes this key may see, with their state: the whole fleet for a platform admin, else the
    tenant's own nodes."""
    items = registry.list_workers(session, principal.tenant_id, principal.role, state.settings.lease_seconds)
    session.commit()
    return WorkerList(items=items)


@router.get("/{worker_id}", response_model=WorkerInfo)
def get_worker(
    worker_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> WorkerInfo:
    """One node (404 for a node this key may not see)."""
    found = registry.get_worker(
        session, principal.tenant_id, principal.role, state.settings.lease_seconds, worker_id
    )
    session.commit()
    return found


WorkerIdPath = Annotated[str, Path(min_length=1, max_length=64)]


def _shown(session: SessionDep, principal: CurrentPrincipal, state: StateDep, worker_id: str) -> WorkerInfo:
    session.commit()
    return registry.get_worker(
        session, principal.tenant_id, principal.role, state.settings.lease_seconds, worker_id
    )


@router.post("/{worker_id}/drain", response_model=WorkerInfo)
def drain_worker(
    worker_id: WorkerIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    body: NodeAction | None = None,
) -> WorkerInfo:
    """Stop handing the node new jobs; what it runs finishes (``resume`` undoes it)."""
    nodestatus.drain(session, principal.tenant_id, principal.role, worker_id, body.reason if body else "")
    return _shown(session, principal, state, worker_id)


@router.post("/{worker_id}/resume", response_model=WorkerInfo)
def resume_worker(
    worker_id: WorkerIdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> WorkerInfo:
    """Let a drained node claim jobs again."""
    nodestatus.resume(session, principal.tenant_id, principal.role, worker_id)
    return _shown(session, principal, state, worker_id)


@router.post("/{worker_id}/revoke", response_model=WorkerInfo)
def revoke_worker(
    worker_id: WorkerIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    body: NodeAction | None = None,
) -> WorkerInfo:
    """Cut the node off for good: its token is refused everywhere, its attempts go back to the queue
    (not charged), and its key cannot register again."""
    changed, finished = nodestatus.revoke(
        session, principal.tenant_id, principal.role, worker_id, body.reason if body else ""
    )
    shown = _shown(session, principal, state, worker_id)
    state.job_changed(changed)
    for job in finished:
        state.metrics.observe_job_finished(job)
    return shown
