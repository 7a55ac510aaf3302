"""``GET /v1/workers``: the node registry (the worker protocol's own routes are in ``routes.workers``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nexa.contracts.workers import WorkerInfo, WorkerList
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.services import registry

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
