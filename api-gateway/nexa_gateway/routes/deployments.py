"""Listing deployments, reading their status, and undeploying them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from nexa.contracts.artifacts import Deployment, DeploymentList
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.services import deployments as svc

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])

DeploymentIdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("", response_model=DeploymentList)
def list_deployments(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> DeploymentList:
    """The caller's deployments, newest first, each with its status."""
    items, nxt = svc.list_deployments(
        session,
        state.store,
        principal.tenant_id,
        limit=limit,
        cursor=cursor,
        public_base=state.settings.public_url,
    )
    session.commit()
    return DeploymentList(items=items, next_cursor=nxt)


@router.get("/{deployment_id}", response_model=Deployment)
def get_deployment(
    deployment_id: DeploymentIdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> Deployment:
    """One deployment: where it serves and whether it still runs."""
    found = svc.get_deployment(
        session, state.store, principal.tenant_id, deployment_id, state.settings.public_url
    )
    session.commit()
    return found


@router.delete("/{deployment_id}", response_model=Deployment)
async def undeploy(
    deployment_id: DeploymentIdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> Deployment:
    """Stop serving: the process exits within a few seconds; repeating the call is harmless."""
    found = await run_in_threadpool(
        svc.undeploy,
        session,
        state.store,
        principal.tenant_id,
        deployment_id,
        requested_by=f"tenant:{principal.tenant_id}",
        public_base=state.settings.public_url,
    )
    await run_in_threadpool(session.commit)
    return found
