"""Budgets: a job's own cap (``max_cost_cents``) and its tenant's monthly limit, checked at submission.

A submission is refused with 402 ``budget_exceeded`` when its estimate is above its
own cap, or when the tenant's spend this month plus the estimate would pass the
monthly limit (or the limit is already reached). The estimate counts only what is
known before the run (``services.estimates``); a unit it cannot know counts as nothing
here, and is caught while the job runs (``services.runningcaps``).
A repeat of an accepted submission (same idempotency key) is never refused: it
returns the job that exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts import JobOptions, JobType
from nexa.contracts.billing import CostEstimate, PriceBook, TenantBudget
from nexa.contracts.catalog import CatalogEntry
from nexa_gateway.db import Budget, Job
from nexa_gateway.errors import ApiError
from nexa_gateway.services import billing, stripesync
from nexa_gateway.services.estimates import estimate
from nexa_store.access import Access
from nexa_store.base import ArtifactStore


def spent_this_month(session: Session, book: PriceBook, tenant_id: str) -> int:
    now = datetime.now(UTC)
    return billing.summary(session, book, tenant_id, billing.month_start(now), now).total_cents


def view(session: Session, book: PriceBook, tenant_id: str) -> TenantBudget:
    row = session.get(Budget, tenant_id)
    spent = spent_this_month(session, book, tenant_id)
    limit = row.monthly_limit_cents if row is not None else None
    return TenantBudget(
        tenant_id=tenant_id,
        monthly_limit_cents=limit,
        spent_this_month_cents=spent,
        remaining_cents=None if limit is None else max(0, limit - spent),
    )


def set_limit(session: Session, tenant_id: str, cents: int | None) -> None:
    row = session.get(Budget, tenant_id)
    if cents is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(Budget(tenant_id=tenant_id, monthly_limit_cents=cents))
    else:
        row.monthly_limit_cents, row.updated_at = cents, datetime.now(UTC).replace(tzinfo=None)
    session.flush()


def check(
    session: Session,
    store: ArtifactStore,
    book: PriceBook,
    tenant_id: str,
    job_type: JobType,
    spec: JobOptions,
    idempotency_key: str | None,
    catalog: Mapping[str, CatalogEntry] | None = None,
    access: Access | None = None,
) -> CostEstimate:
    """The job's estimate, kept with the job; raises 402 ``budget_exceeded`` when the job would pass its
    cap or its tenant's monthly budget, and 402 ``payment_failed`` while the tenant's last invoice is
    unpaid (Stripe said so). Reads only."""
    unpaid = stripesync.payment_failure(session, tenant_id)
    if unpaid is not None:
        raise ApiError(
            402, "payment_failed", f"new jobs are refused until the tenant's payment goes through: {unpaid}"
        )
    guess = estimate(session, store, book, tenant_id, job_type, spec, catalog, access)
    budget = session.get(Budget, tenant_id)
    if spec.max_cost_cents is None and budget is None:
        return guess
    key = idempotency_key or spec.idempotency_key
    if key and session.scalar(select(Job.id).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)):
        return guess  # a repeat: the job exists and is returned as it is
    if spec.max_cost_cents is not None and guess.total_cents > spec.max_cost_cents:
        raise ApiError(
            402,
            "budget_exceeded",
            f"this {job_type.value} job is estimated at {billing.dollars(guess.total_cents)}, above its max_cost_cents "
            f"{spec.max_cost_cents} ({billing.dollars(spec.max_cost_cents)}); see POST /v1/{job_type.value}/estimate",
            field="max_cost_cents",
        )
    if budget is None:
        return guess
    spent = spent_this_month(session, book, tenant_id)
    limit = budget.monthly_limit_cents
    if spent >= limit or spent + guess.total_cents > limit:
        raise ApiError(
            402,
            "budget_exceeded",
            f"the monthly budget is {billing.dollars(limit)}; {billing.dollars(spent)} is spent this month and this "
            f"{job_type.value} job is estimated at {billing.dollars(guess.total_cents)}, which leaves "
            f"{billing.dollars(max(0, limit - spent))}: ask an admin to raise the budget",
        )
    return guess
