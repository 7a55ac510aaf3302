"""Managing API keys of the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nexa.contracts import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo
from nexa.contracts.keys import KeyPrincipal, Role
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep, TenantAdmin
from nexa_gateway.errors import ApiError, not_found
from nexa_gateway.services import keys as svc

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", response_model=ApiKeyCreated, status_code=201)
def create_key(body: ApiKeyCreate, principal: TenantAdmin, session: SessionDep) -> ApiKeyCreated:
    """Create another key for the caller's tenant (admin keys only); the secret is in this answer only."""
    if body.role is Role.platform_admin or not principal.role.at_least(body.role):
        raise ApiError(
            403,
            "forbidden",
            f"a {principal.role.value} key cannot create a {body.role.value} key "
            "(platform admin keys are made by the operator: nexa keys create --database-url … --role platform_admin)",
            field="role",
        )
    created = svc.create_key_for_tenant(
        session, principal.tenant_id, name=body.name, expires_in_days=body.expires_in_days, role=body.role
    )
    session.commit()
    return created


@router.get("/self", response_model=KeyPrincipal)
def key_self(principal: CurrentPrincipal) -> KeyPrincipal:
    """The key and tenant the caller's own key belongs to (how a deployed endpoint checks a caller)."""
    return KeyPrincipal(key_id=principal.key_id, tenant_id=principal.tenant_id, role=principal.role)


@router.get("", response_model=list[ApiKeyInfo])
def list_keys(principal: CurrentPrincipal, session: SessionDep) -> list[ApiKeyInfo]:
    """The tenant's keys (never their secrets)."""
    keys = svc.list_keys(session, principal.tenant_id)
    session.commit()
    return keys


@router.delete("/{key_id}", response_model=ApiKeyInfo)
def revoke_key(
    key_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: TenantAdmin,
    session: SessionDep,
    state: StateDep,
) -> ApiKeyInfo:
    """Revoke a key; it is refused from the next request on."""
    info = svc.revoke_key(session, principal.tenant_id, key_id)
    if info is None:
        raise not_found("key", key_id)
    session.commit()
    state.keys.forget_all()
    return info
