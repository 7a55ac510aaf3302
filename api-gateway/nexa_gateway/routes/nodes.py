"""Node tokens of the caller's tenant: the credential a tenant's own machines register with."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nexa.contracts.keys import NodeTokenCreate, NodeTokenCreated, NodeTokenInfo
from nexa_gateway.deps import CurrentPrincipal, SessionDep, TenantAdmin
from nexa_gateway.errors import not_found
from nexa_gateway.services import nodes as svc

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.post("/tokens", response_model=NodeTokenCreated, status_code=201)
def create_token(body: NodeTokenCreate, principal: TenantAdmin, session: SessionDep) -> NodeTokenCreated:
    """A node token (admin keys only): nodes registered with it are this tenant's and run only its jobs."""
    created = svc.create(session, principal.tenant_id, body.name)
    session.commit()
    return created


@router.get("/tokens", response_model=list[NodeTokenInfo])
def list_tokens(principal: CurrentPrincipal, session: SessionDep) -> list[NodeTokenInfo]:
    """The tenant's node tokens (never their secrets)."""
    tokens = svc.list_tokens(session, principal.tenant_id)
    session.commit()
    return tokens


@router.delete("/tokens/{token_id}", response_model=NodeTokenInfo)
def revoke_token(
    token_id: Annotated[str, Path(min_length=1, max_length=64)], principal: TenantAdmin, session: SessionDep
) -> NodeTokenInfo:
    """Revoke a node token: it registers nothing more, and every node registered with it is cut off."""
    info = svc.revoke(session, principal.tenant_id, token_id)
    if info is None:
        raise not_found("node token", token_id)
    session.commit()
    return info
