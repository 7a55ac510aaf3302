"""Platform administration over the API: what each tenant may read besides its own artifacts.

Only ``platform_admin`` keys reach these routes (the bootstrap key, or one made
with ``nexa keys create --database-url … --role platform_admin``). Tenants are
named by their name, as ``nexa keys create --tenant`` names them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import select

from nexa.contracts.billing import BudgetChange, LedgerVerification, TenantBudget
from nexa.contracts.keys import GrantChange, TenantGrants
from nexa_gateway.db import Tenant
from nexa_gateway.deps import PlatformAdmin, SessionDep, StateDep
from nexa_gateway.errors import not_found
from nexa_gateway.services import budgets, grants, ledger

router = APIRouter(prefix="/v1/admin", tags=["admin"])

TenantName = Annotated[str, Path(min_length=1, max_length=200)]


def _tenant_id(session: SessionDep, name: str) -> str:
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
    if tenant_id is None:
        raise not_found("tenant", name)
    return str(tenant_id)


def _view(session: SessionDep, name: str, tenant_id: str) -> TenantGrants:
    roots, buckets = grants.granted(session, tenant_id)
    return TenantGrants(tenant=name, tenant_id=tenant_id, local_roots=roots, s3_buckets=buckets)


@router.get("/tenants/{tenant}/grants", response_model=TenantGrants)
def list_grants(tenant: TenantName, _admin: PlatformAdmin, session: SessionDep) -> TenantGrants:
    """What the tenant may read besides its own artifacts."""
    return _view(session, tenant, _tenant_id(session, tenant))


@router.post("/tenants/{tenant}/grants", response_model=TenantGrants)
def add_grant(
    tenant: TenantName, body: GrantChange, _admin: PlatformAdmin, session: SessionDep, state: StateDep
) -> TenantGrants:
    """Grant a local root (inside NEXA_ALLOWED_DATASET_ROOTS) or an S3 bucket; repeating it is harmless."""
    tenant_id = _tenant_id(session, tenant)
    grants.grant(session, state.settings, tenant_id, body.kind, body.value)
    session.commit()
    return _view(session, tenant, tenant_id)


@router.post("/tenants/{tenant}/grants/revoke", response_model=TenantGrants)
def revoke_grant(
    tenant: TenantName, body: GrantChange, _admin: PlatformAdmin, session: SessionDep
) -> TenantGrants:
    """Take a grant back: later submissions and later attempts are refused."""
    tenant_id = _tenant_id(session, tenant)
    grants.revoke(session, tenant_id, body.kind, body.value)
    session.commit()
    return _view(session, tenant, tenant_id)


@router.get("/tenants/{tenant}/budget", response_model=TenantBudget)
def get_budget(
    tenant: TenantName, _admin: PlatformAdmin, session: SessionDep, state: StateDep
) -> TenantBudget:
    """The tenant's monthly budget and its spend this month."""
    return budgets.view(session, state.settings.prices(), _tenant_id(session, tenant))


@router.put("/tenants/{tenant}/budget", response_model=TenantBudget)
def put_budget(
    tenant: TenantName, body: BudgetChange, _admin: PlatformAdmin, session: SessionDep, state: StateDep
) -> TenantBudget:
    """Set (or, with null, remove) the tenant's monthly budget: later submissions are checked against it."""
    tenant_id = _tenant_id(session, tenant)
    budgets.set_limit(session, tenant_id, body.monthly_limit_cents)
    session.commit()
    return budgets.view(session, state.settings.prices(), tenant_id)


@router.get("/tenants/{tenant}/ledger/verify", response_model=LedgerVerification)
def verify_ledger(tenant: TenantName, _admin: PlatformAdmin, session: SessionDep) -> LedgerVerification:
    """Walk the tenant's usage ledger: every entry's hash chain, and every usage row against its entry."""
    result = ledger.verify(session, ledger.usage_stream(_tenant_id(session, tenant)))
    return LedgerVerification(
        stream=result.stream, entries=result.entries, ok=result.ok, problem=result.problem
    )
