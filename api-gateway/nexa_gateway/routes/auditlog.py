"""``GET /v1/audit-log``: the tenant's record of who changed what, when and from where."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from nexa.contracts.auditlog import AuditLogPage
from nexa.contracts.keys import Role
from nexa_gateway.deps import SessionDep, TenantAdmin
from nexa_gateway.errors import ApiError
from nexa_gateway.routes.billing import PeriodBound, _utc
from nexa_gateway.services import auditlog as svc

router = APIRouter(prefix="/v1/audit-log", tags=["audit"])


@router.get("", response_model=AuditLogPage)
def audit_log(
    principal: TenantAdmin,
    session: SessionDep,
    before: Annotated[int | None, Query(ge=1, description="Entries older than this id (paging).")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    action: Annotated[
        str | None, Query(max_length=200, description="e.g. `DELETE /v1/keys/{key_id}`.")
    ] = None,
    actor: Annotated[str | None, Query(max_length=64, description="A key or worker id.")] = None,
    since: PeriodBound = None,
    tenant: Annotated[
        str | None, Query(max_length=40, description="Another tenant's log (platform admins).")
    ] = None,
) -> AuditLogPage:
    """The tenant's actions, newest first (admin keys; platform admins may name another tenant)."""
    tenant_id = principal.tenant_id
    if tenant is not None and tenant != tenant_id:
        if not principal.role.at_least(Role.platform_admin):
            raise ApiError(403, "forbidden", "only a platform admin reads another tenant's audit log")
        tenant_id = tenant
    return svc.entries(
        session,
        tenant_id,
        before=before,
        limit=limit,
        action=action,
        actor_id=actor,
        since=_utc(since, "since"),
    )
