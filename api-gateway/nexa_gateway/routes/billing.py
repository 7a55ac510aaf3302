"""The caller's spend and the prices it is charged at."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from nexa.contracts.billing import BillingSummary, PriceBook
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.services import billing as svc

router = APIRouter(prefix="/v1/billing", tags=["billing"])


def _utc(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value.year < 2000 or value.year > 9000:
        raise ApiError(422, "validation_error", f"{field} is out of range", field=field)
    return value.astimezone(UTC)


@router.get("/summary", response_model=BillingSummary)
def billing_summary(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    start: Annotated[
        datetime | None,
        Query(description="Period start (ISO 8601, UTC when no offset); this month's first day."),
    ] = None,
    end: Annotated[datetime | None, Query(description="Period end, exclusive; now when unset.")] = None,
) -> BillingSummary:
    """The caller's tenant's spend in the period: total, by job type, by day, by job, and the usage behind it."""
    now = datetime.now(UTC)
    period_end = _utc(end, "end") or now
    period_start = _utc(start, "start") or svc.month_start(min(period_end, now))
    if period_start >= period_end:
        raise ApiError(422, "validation_error", "start must be before end", field="start")
    result = svc.summary(session, state.settings.prices(), principal.tenant_id, period_start, period_end)
    session.commit()
    return result


@router.get("/prices", response_model=PriceBook)
def price_book(principal: CurrentPrincipal, state: StateDep) -> PriceBook:
    """The price book usage is charged at, with every dated version."""
    return state.settings.prices()
