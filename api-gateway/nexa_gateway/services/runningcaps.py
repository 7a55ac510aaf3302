"""Budgets while a job runs: stop an attempt whose charge reaches a cap, and never bill past it.

Submission checks a job against its estimate (``services.budgets``), but machine time is only
known as it is spent. So a worker sends its attempt's usage so far with each progress report,
and the gateway prices it (the book in force now) together with what the job's earlier attempts
were charged and, where the tenant has a monthly budget, this month's spend:

* the job's own cap (``max_cost_cents``) or the tenant's budget reached: the attempt is stopped.
  A ``job_stops`` row names it, ``cancel_requested`` is set, and the worker learns at its next
  heartbeat that this is a ``budget_exceeded`` stop, not a user's cancel (the train engine then
  keeps a resumable checkpoint). The attempt ends ``budget_exceeded`` whatever the worker
  reports, and a worker that does not stop is ended by the reaper after ``STOP_GRACE_SECONDS``.
* billing: an attempt's recorded usage is scaled down so that the job never costs more than its
  cap, and a stopped attempt never more than what was left when it was stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa.contracts import ErrorCode
from nexa.contracts.billing import PriceBook, shown, to_cents
from nexa.contracts.workers import UsageRecord
from nexa_gateway.db import Budget, Job, JobStop, Usage
from nexa_gateway.services import billing
from nexa_gateway.services.jobs import add_event

STOP_GRACE_SECONDS = 120  # then the reaper ends an attempt whose worker ignored the stop
QUANTUM = Decimal("0.000001")


def job_cap_cents(row: Job) -> int | None:
    value = (row.spec or {}).get("max_cost_cents")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def priced(book: PriceBook, row: Job, usage: list[UsageRecord], at: datetime) -> Decimal:
    """What ``usage`` of ``row`` costs, in dollars, under the version of the book in force at ``at``."""
    return sum(
        (billing.charge(book, row.job_type, row.gpu_type, u.kind, u.amount, at) for u in usage), Decimal(0)
    )


def recorded_charge(session: Session, book: PriceBook, row: Job) -> Decimal:
    """What the job's recorded usage (its earlier attempts) costs, each row at its own time."""
    rows = session.execute(
        select(Usage.kind, Usage.amount, Usage.created_at).where(Usage.job_id == row.id)
    ).all()
    return sum((billing.charge(book, row.job_type, row.gpu_type, k, a, at) for k, a, at in rows), Decimal(0))


@dataclass(frozen=True)
class Stop:
    code: str
    message: str
    allowed_cents: int | None


def stop_of(session: Session, job_id: str, attempt: int) -> Stop | None:
    row = session.get(JobStop, (job_id, attempt))
    return None if row is None else Stop(row.code, row.message, row.allowed_cents)


def _over(session: Session, book: PriceBook, row: Job, usage: list[UsageRecord]) -> Stop | None:
    """The budget this attempt's usage so far has reached, if any."""
    cap = job_cap_cents(row)
    budget = session.get(Budget, row.tenant_id)
    if cap is None and budget is None:
        return None
    now = datetime.now(UTC)
    running = priced(book, row, usage, now)
    if running <= 0:
        return None
    running_cents = to_cents(running)
    if cap is not None:
        earlier = to_cents(recorded_charge(session, book, row))
        if earlier + running_cents >= cap:
            return Stop(
                ErrorCode.budget_exceeded,
                f"stopped at its cap: max_cost_cents {cap} ({billing.dollars(cap)}) is reached: this attempt has "
                f"used {billing.dollars(running_cents)}"
                + (f" after {billing.dollars(earlier)} in earlier attempts" if earlier else ""),
                max(0, cap - earlier),
            )
    if budget is not None:
        from nexa_gateway.services.budgets import spent_this_month

        spent = spent_this_month(session, book, row.tenant_id)
        limit = budget.monthly_limit_cents
        if spent + running_cents >= limit:
            return Stop(
                ErrorCode.budget_exceeded,
                f"stopped at the tenant's monthly budget of {billing.dollars(limit)}: {billing.dollars(spent)} was spent "
                f"this month and this attempt has used {billing.dollars(running_cents)}",
                max(0, limit - spent),
            )
    return None


def check_running(
    session: Session, book: PriceBook, job_id: str, attempt: int, usage: list[UsageRecord]
) -> Stop | None:
    """Stop the running attempt when its usage so far reaches a budget; the stop, if there is one."""
    known = stop_of(session, job_id, attempt)
    if known is not None or not usage:
        return known
    row = session.scalar(select(Job).where(Job.id == job_id, Job.attempt == attempt, Job.status == "running"))
    if row is None:
        return None
    stop = _over(session, book, row, usage)
    if stop is None:
        return None
    try:
        with session.begin_nested():
            session.add(
                JobStop(
                    job_id=job_id,
                    attempt=attempt,
                    code=stop.code,
                    message=stop.message,
                    allowed_cents=stop.allowed_cents,
                )
            )
            session.flush()
    except IntegrityError:
        return stop_of(session, job_id, attempt)  # a concurrent report stopped it first
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == "running")
        .values(cancel_requested=True, progress_message="stopping: budget reached")
    )
    add_event(session, job_id, "budget_exceeded", stop.message, attempt)
    return stop


def within_budget(
    session: Session, book: PriceBook, row: Job, attempt: int, usage: list[UsageRecord]
) -> list[UsageRecord]:
    """``usage`` scaled down, when needed, so the job costs no more than its cap and a stopped
    attempt no more than what was left when it was stopped. Unpriced kinds are kept as reported."""
    allowed: Decimal | None = None
    cap = job_cap_cents(row)
    if cap is not None:
        allowed = Decimal(cap) / 100 - recorded_charge(session, book, row)
    stop = stop_of(session, row.id, attempt)
    if stop is not None and stop.allowed_cents is not None:
        left = Decimal(stop.allowed_cents) / 100
        allowed = left if allowed is None else min(allowed, left)
    if allowed is None:
        return usage
    now = datetime.now(UTC)
    cost = priced(book, row, usage, now)
    if cost <= allowed or cost <= 0:
        return usage
    factor = max(Decimal(0), allowed) / cost
    scaled = []
    for item in usage:
        if billing.charge(book, row.job_type, row.gpu_type, item.kind, item.amount, now) > 0:
            amount = float((Decimal(str(item.amount)) * factor).quantize(QUANTUM, rounding=ROUND_DOWN))
            item = UsageRecord(kind=item.kind, amount=amount)
        scaled.append(item)
    add_event(
        session,
        row.id,
        "charged_to_cap",
        f"attempt {attempt} used ${shown(cost)} and is charged ${shown(max(Decimal(0), allowed))}, "
        "what its budget left",
        attempt,
    )
    return scaled


def unheeded(session: Session, now: datetime) -> list[Job]:
    """Running attempts stopped more than ``STOP_GRACE_SECONDS`` ago whose worker has not ended them."""
    return list(
        session.scalars(
            select(Job)
            .join(JobStop, (JobStop.job_id == Job.id) & (JobStop.attempt == Job.attempt))
            .where(Job.status == "running", JobStop.created_at < now - timedelta(seconds=STOP_GRACE_SECONDS))
            .order_by(JobStop.created_at)
            .limit(100)
        )
    )
