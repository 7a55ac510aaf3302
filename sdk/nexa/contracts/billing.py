"""Prices and bills: the price book a platform charges by, and a tenant's spend for a period.

Money is ``Decimal`` (serialized as a string), never a float: a rate like $0.30 per
million tokens times 123,456 tokens must add up the same on every machine. Totals are
also given in integer cents (``*_cents``), rounded half-up once per charge line.

Usage kinds are what the engines meter per job attempt (``UsageKind``); a rate names
the kind it prices, per how many units, and optionally which job types and GPU types
it applies to. A price book is a list of versions, each in force from its
``effective_from``: usage is priced by the version in force when it was recorded, so
a price change never reprices the past.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nexa.contracts.common import StrictModel
from nexa.contracts.jobs import JobType

UsageKind = Literal[
    "rows",
    "prompt_tokens",
    "completion_tokens",
    "samples",
    "gpu_hours",
    "cpu_hours",
    "deployments",
    "deployment_hours",
    "storage_gb_months",
]
CENT = Decimal("0.01")


def shown(amount: Decimal) -> Decimal:
    """An exact amount as a reader writes it: to the cent when it is whole cents (``2.80``), else every
    digit it has (``0.0370368``), never an exponent."""
    if amount == amount.quantize(CENT):
        return amount.quantize(CENT)
    return Decimal(format(amount.normalize(), "f"))


def to_cents(amount: Decimal) -> int:
    """``amount`` dollars as whole cents, rounded half-up."""
    return int((amount / CENT).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Rate(StrictModel):
    """One price: ``price`` dollars per ``per`` units of ``kind`` (for some job or GPU types only)."""

    kind: UsageKind = Field(description="The metered usage this rate prices.")
    price: Decimal = Field(ge=0, max_digits=18, decimal_places=8, description="Dollars per `per` units.")
    per: Decimal = Field(
        Decimal(1), gt=0, max_digits=18, decimal_places=4, description="Units the price is for."
    )
    job_types: list[JobType] | None = Field(
        None, description="Only usage of these job types; all when unset."
    )
    gpu_types: list[str] | None = Field(
        None, description="Only jobs that asked for these GPU types (gpu_hours); any when unset."
    )
    label: str = Field("", max_length=200, description="How the bill names this line.")

    def applies(self, kind: str, job_type: str, gpu_type: str | None) -> bool:
        if kind != self.kind:
            return False
        if self.job_types is not None and job_type not in {t.value for t in self.job_types}:
            return False
        if self.gpu_types is not None:
            return gpu_type is not None and gpu_type.upper() in {g.upper() for g in self.gpu_types}
        return True

    def specificity(self) -> int:
        """More specific rates win: a GPU type beats a job type beats a catch-all."""
        return (2 if self.gpu_types is not None else 0) + (1 if self.job_types is not None else 0)


class PriceBookVersion(StrictModel):
    """The rates in force from ``effective_from`` until the next version."""

    effective_from: datetime = Field(description="When these rates start to apply (UTC).")
    rates: list[Rate] = Field(max_length=200, description="The rates; usage no rate applies to is free.")

    def rate_for(self, kind: str, job_type: str, gpu_type: str | None) -> Rate | None:
        matching = [r for r in self.rates if r.applies(kind, job_type, gpu_type)]
        return max(matching, key=Rate.specificity) if matching else None


class PriceBook(StrictModel):
    """A named, versioned set of rates in one currency."""

    name: str = Field(min_length=1, max_length=64)
    currency: Literal["usd"] = "usd"
    versions: list[PriceBookVersion] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _versions_in_order(self) -> PriceBook:
        times = [v.effective_from for v in self.versions]
        if times != sorted(times) or len(set(times)) != len(times):
            raise ValueError("price book versions must have distinct effective_from times, oldest first")
        return self

    def version_at(self, when: datetime) -> PriceBookVersion | None:
        """The version in force at ``when``; none before the first one."""
        current = None
        for version in self.versions:
            if version.effective_from <= when:
                current = version
        return current


class ChargeLine(BaseModel):
    """Usage of one kind, priced."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    quantity: Decimal
    amount: Decimal
    amount_cents: int
    label: str = ""


class JobCharge(BaseModel):
    """One job's spend in the period."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    job_type: str
    amount: Decimal
    amount_cents: int
    lines: list[ChargeLine] = Field(default_factory=list)


class DaySpend(BaseModel):
    model_config = ConfigDict(extra="ignore")

    day: date
    amount: Decimal
    amount_cents: int


class BillingSummary(BaseModel):
    """A tenant's spend for a period: totals, by job type, by day, by job, and the usage behind it."""

    model_config = ConfigDict(extra="ignore")

    tenant_id: str
    currency: str = "usd"
    price_book: str
    start: datetime
    end: datetime
    total: Decimal
    total_cents: int
    by_job_type: dict[str, Decimal] = Field(default_factory=dict)
    by_day: list[DaySpend] = Field(default_factory=list)
    by_job: list[JobCharge] = Field(default_factory=list)
    usage: dict[str, Decimal] = Field(default_factory=dict)
    unpriced: dict[str, Decimal] = Field(
        default_factory=dict, description="Usage no rate of the price book covers (free)."
    )


class EstimateLine(BaseModel):
    """One unit a job will use: how much (when it can be known before the run), what it costs, and why."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    quantity: Decimal | None = None
    amount: Decimal | None = None
    basis: str


class CostEstimate(BaseModel):
    """What a job is expected to cost before it runs, unit by unit; ``complete`` is false when some unit
    (machine time, a benchmark's size) can only be known by running it."""

    model_config = ConfigDict(extra="ignore")

    job_type: str
    price_book: str
    currency: str = "usd"
    total: Decimal
    total_cents: int
    complete: bool
    lines: list[EstimateLine] = Field(default_factory=list)


class CostComparison(BaseModel):
    """One unit of a job: what the estimate at submission expected, and what was used and charged."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    estimated_quantity: Decimal | None = None
    estimated_amount: Decimal | None = None
    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    amount_cents: int = 0
    basis: str = Field("", description="How the estimate knew its quantity.")


class JobCost(BaseModel):
    """A job's estimate at submission beside what its attempts have been charged so far."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    job_type: str
    price_book: str
    currency: str = "usd"
    estimate: CostEstimate | None = Field(
        None, description="As it was at submission; unset for a job submitted before estimates were kept."
    )
    charged: Decimal
    charged_cents: int
    lines: list[CostComparison] = Field(default_factory=list)


class BudgetChange(StrictModel):
    """Set a tenant's monthly budget in US cents; null removes it."""

    monthly_limit_cents: int | None = Field(None, ge=0, le=10**12)


class TenantBudget(BaseModel):
    """A tenant's monthly budget and what it has spent of it this month."""

    model_config = ConfigDict(extra="ignore")

    tenant_id: str
    monthly_limit_cents: int | None = None
    spent_this_month_cents: int = 0
    remaining_cents: int | None = None


class LedgerVerification(BaseModel):
    """The result of walking a hash-chained ledger stream."""

    model_config = ConfigDict(extra="ignore")

    stream: str
    entries: int
    ok: bool
    problem: str | None = None
