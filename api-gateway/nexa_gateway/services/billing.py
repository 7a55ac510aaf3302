"""A tenant's bill: the metered usage of its jobs, priced by the price book in force when it was recorded."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from nexa.contracts.billing import (
    BillingSummary,
    ChargeLine,
    CostComparison,
    CostEstimate,
    DaySpend,
    JobCharge,
    JobCost,
    PriceBook,
    shown,
    to_cents,
)
from nexa_gateway.db import Job, JobEstimate, Usage, UsageSubject

TOP_JOBS = 100  # the by-job list names the most expensive jobs of the period


def charge(
    book: PriceBook, job_type: str, gpu_type: str | None, kind: str, amount: float, at: datetime
) -> Decimal:
    """What ``amount`` of ``kind`` costs under the version of ``book`` in force at ``at`` (0 when unpriced)."""
    version = book.version_at(_aware(at))
    rate = version.rate_for(kind, job_type, gpu_type) if version is not None else None
    return Decimal(0) if rate is None else Decimal(str(amount)) / rate.per * rate.price


def dollars(cents: int) -> str:
    """Whole cents as a reader writes dollars in a message: ``$1,234.50``."""
    return f"${cents / 100:,.2f}"


def plain(quantity: Decimal) -> Decimal:
    """A usage quantity without trailing zeros or an exponent (``1500``, ``0.5``)."""
    return Decimal(format(quantity.normalize(), "f"))


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def summary(
    session: Session, book: PriceBook, tenant_id: str, start: datetime, end: datetime
) -> BillingSummary:
    """The tenant's usage recorded in ``[start, end)``, priced line by line (one line per job and kind)."""
    type_col = func.coalesce(Job.job_type, UsageSubject.job_type)
    gpu_col = func.coalesce(Job.gpu_type, UsageSubject.gpu_type)
    rows = session.execute(
        select(Usage.job_id, Usage.kind, Usage.amount, Usage.created_at, type_col, gpu_col)
        .outerjoin(Job, Job.id == Usage.job_id)
        .outerjoin(UsageSubject, UsageSubject.id == Usage.job_id)
        .where(Usage.tenant_id == tenant_id)
        # A standalone job or a subject (a cluster NexaJob, a month of storage) of this same tenant.
        .where(or_(Job.tenant_id == tenant_id, UsageSubject.tenant_id == tenant_id))
        .where(Usage.created_at >= start.replace(tzinfo=None), Usage.created_at < end.replace(tzinfo=None))
        .order_by(Usage.created_at, Usage.id)
    ).all()
    jobs: dict[str, JobCharge] = {}
    by_type: dict[str, Decimal] = defaultdict(Decimal)
    by_day: dict[date, list[Decimal | int]] = defaultdict(lambda: [Decimal(0), 0])
    usage: dict[str, Decimal] = defaultdict(Decimal)
    unpriced: dict[str, Decimal] = defaultdict(Decimal)
    total, total_cents = Decimal(0), 0
    for job_id, kind, amount, created_at, job_type, gpu_type in rows:
        # Floats in the usage table are exact for the counts engines report; str() keeps what was stored.
        quantity = Decimal(str(amount))
        usage[kind] += quantity
        version = book.version_at(_aware(created_at))
        rate = version.rate_for(kind, job_type, gpu_type) if version is not None else None
        job = jobs.setdefault(
            job_id, JobCharge(job_id=job_id, job_type=job_type, amount=Decimal(0), amount_cents=0)
        )
        if rate is None:
            # Shown on its job at no charge: the job's usage reads whole, what is free included.
            unpriced[kind] += quantity
            job.lines.append(
                ChargeLine(
                    kind=kind, quantity=quantity, amount=Decimal(0), amount_cents=0, label="not priced"
                )
            )
            continue
        charge = quantity / rate.per * rate.price
        cents = to_cents(charge)
        job.lines.append(
            ChargeLine(kind=kind, quantity=quantity, amount=charge, amount_cents=cents, label=rate.label)
        )
        job.amount += charge
        job.amount_cents += cents
        by_type[job_type] += charge
        day = by_day[_aware(created_at).date()]
        day[0] = Decimal(day[0]) + charge
        day[1] = int(day[1]) + cents
        total += charge
        total_cents += cents
    ranked = sorted(jobs.values(), key=lambda j: (-j.amount, j.job_id))[:TOP_JOBS]
    for job in ranked:
        job.amount = shown(job.amount)
        for line in job.lines:
            line.amount, line.quantity = shown(line.amount), plain(line.quantity)
    return BillingSummary(
        tenant_id=tenant_id,
        currency=book.currency,
        price_book=book.name,
        start=start,
        end=end,
        total=shown(total),
        total_cents=total_cents,
        by_job_type={k: shown(v) for k, v in by_type.items()},
        by_day=[
            DaySpend(day=d, amount=shown(Decimal(v[0])), amount_cents=int(v[1]))
            for d, v in sorted(by_day.items())
        ],
        by_job=ranked,
        usage={k: plain(v) for k, v in usage.items()},
        unpriced={k: plain(v) for k, v in unpriced.items()},
    )


def job_cost(
    session: Session, book: PriceBook, tenant_id: str, job_id: str, job_type: str, gpu_type: str | None
) -> JobCost:
    """The job's estimate at submission beside its usage so far, kind by kind, each usage row priced
    by the version of the book in force when it was recorded (as the summary does)."""
    kept = session.scalar(
        select(JobEstimate.estimate).where(JobEstimate.job_id == job_id, JobEstimate.tenant_id == tenant_id)
    )
    estimate = CostEstimate.model_validate(kept) if kept is not None else None
    lines: dict[str, CostComparison] = {}
    if estimate is not None:
        for guess in estimate.lines:
            lines[guess.kind] = CostComparison(
                kind=guess.kind,
                estimated_quantity=guess.quantity,
                estimated_amount=guess.amount,
                basis=guess.basis,
            )
    rows = session.execute(
        select(Usage.kind, Usage.amount, Usage.created_at)
        .where(Usage.job_id == job_id, Usage.tenant_id == tenant_id)
        .order_by(Usage.id)
    ).all()
    for kind, amount, created_at in rows:
        line = lines.setdefault(kind, CostComparison(kind=kind))
        quantity = Decimal(str(amount))
        line.quantity += quantity
        version = book.version_at(_aware(created_at))
        rate = version.rate_for(kind, job_type, gpu_type) if version is not None else None
        if rate is not None:
            money = quantity / rate.per * rate.price
            line.amount += money
            line.amount_cents += to_cents(money)
    for line in lines.values():
        line.quantity, line.amount = plain(line.quantity), shown(line.amount)
    return JobCost(
        job_id=job_id,
        job_type=job_type,
        price_book=book.name,
        currency=book.currency,
        estimate=estimate,
        charged=shown(sum((line.amount for line in lines.values()), Decimal(0))),
        charged_cents=sum(line.amount_cents for line in lines.values()),
        lines=list(lines.values()),
    )
