"""The caller's spend, the prices it is charged at, and what a job would cost before it runs."""

# No `from __future__ import annotations`: the estimate handlers are built in a loop and FastAPI
# must see each one's real body class.

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from nexa.contracts import JOB_SPECS, JobOptions, JobType
from nexa.contracts.billing import BillingSummary, CostEstimate, JobCost, PriceBook, TenantBudget
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.services import billing as svc
from nexa_gateway.services import budgets, stripesync
from nexa_gateway.services.defaults import with_platform_defaults
from nexa_gateway.services.estimates import estimate
from nexa_gateway.services.grants import tenant_access
from nexa_gateway.state import AppState

router = APIRouter(prefix="/v1/billing", tags=["billing"])
estimate_router = APIRouter(tags=["billing"])


PeriodBound = Annotated[
    str | None,
    Query(
        max_length=40,
        description="ISO 8601 date or time (UTC when it has no offset), e.g. 2026-12-01 or 2026-12-01T00:00:00Z.",
    ),
]


def _utc(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError as exc:
        raise ApiError(
            422, "validation_error", f"{field}: not an ISO 8601 date or time", field=field
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.year < 2000 or parsed.year > 9000:
        raise ApiError(422, "validation_error", f"{field} is out of range", field=field)
    return parsed.astimezone(UTC)


@router.get("/summary", response_model=BillingSummary)
def billing_summary(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    start: PeriodBound = None,
    end: PeriodBound = None,
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


@router.get("/budget", response_model=TenantBudget)
def own_budget(principal: CurrentPrincipal, session: SessionDep, state: StateDep) -> TenantBudget:
    """The caller's tenant's monthly budget (set by a platform admin) and what is left of it."""
    result = budgets.view(session, state.settings.prices(), principal.tenant_id)
    session.commit()
    return result


@router.post(
    "/stripe/webhook", status_code=200, responses={400: {"description": "A bad or stale signature."}}
)
async def stripe_webhook(request: Request, state: StateDep) -> dict[str, bool]:
    """Stripe's webhook: the signature is checked on the raw body; each event is applied once.

    Authenticated by ``Stripe-Signature`` (``NEXA_STRIPE_WEBHOOK_SECRET``), not by an API key.
    """
    secret = state.settings.stripe_webhook_secret
    if not secret:
        raise ApiError(404, "not_found", "Stripe webhooks are not enabled here (NEXA_STRIPE_WEBHOOK_SECRET)")
    import stripe

    body = await request.body()
    try:
        event = stripe.Webhook.construct_event(
            body,
            request.headers.get("stripe-signature"),
            secret,
            tolerance=state.settings.stripe_webhook_tolerance_seconds,
        )
    except stripe.SignatureVerificationError as exc:
        raise ApiError(
            400, "invalid_signature", f"Stripe-Signature does not verify: {exc.user_message or exc}"
        ) from exc
    except ValueError as exc:
        raise ApiError(400, "bad_request", "the webhook body is not a Stripe event") from exc

    def apply() -> bool:
        with state.db.session() as session:
            return stripesync.apply_event(session, event.to_dict())

    return {"applied": await run_in_threadpool(apply)}


@router.get("/prices", response_model=PriceBook)
def price_book(principal: CurrentPrincipal, state: StateDep) -> PriceBook:
    """The price book usage is charged at, with every dated version."""
    return state.settings.prices()


def _estimate_route(job_type: JobType, spec_cls: type[JobOptions]):  # type: ignore[no-untyped-def]
    def handler(
        body: spec_cls,  # type: ignore[valid-type]
        principal: CurrentPrincipal,
        session: SessionDep,
        state: StateDep,
    ) -> CostEstimate:
        spec = with_platform_defaults(body, state.settings)
        result = estimate(
            session,
            state.store,
            state.settings.prices(),
            principal.tenant_id,
            job_type,
            spec,
            state.catalog,
            tenant_access(session, state.settings, state.store, principal.tenant_id, state.catalog),
        )
        session.commit()
        return result

    handler.__doc__ = (
        f"What a {job_type.value} job would cost, unit by unit, before it runs: nothing is submitted "
        "(`POST /v1/{type}` submits it)."
    )
    return handler


for _type, _cls in JOB_SPECS.items():
    estimate_router.add_api_route(
        f"/v1/{_type.value}/estimate",
        _estimate_route(_type, _cls),
        methods=["POST"],
        response_model=CostEstimate,
        name=f"estimate_{_type.value}",
        summary=f"Estimate a {_type.value} job's cost",
    )


def _job_cost(state: AppState, tenant_id: str, job_id: str) -> JobCost:
    job = state.backend.get(tenant_id, job_id)  # another tenant's job is 404, as everywhere
    resources = job.spec.get("resources") if isinstance(job.spec, dict) else None
    gpu_type = resources.get("gpu_type") if isinstance(resources, dict) else None
    with state.db.read() as session:
        return svc.job_cost(
            session, state.settings.prices(), tenant_id, job.job_id, job.job_type.value, gpu_type
        )


@estimate_router.get("/v1/jobs/{job_id}/cost", response_model=JobCost)
async def job_cost(
    job_id: Annotated[str, Path(min_length=1, max_length=64)], principal: CurrentPrincipal, state: StateDep
) -> JobCost:
    """A job's estimate at submission beside what it has been charged, unit by unit."""
    return await run_in_threadpool(_job_cost, state, principal.tenant_id, job_id)
