"""The mesh's settings as the services that verify, credit and schedule nodes take them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from nexa_gateway.db import Worker
from nexa_gateway.services import benchmarks
from nexa_gateway.services.queue import Holdback
from nexa_gateway.services.reputation import CreditPolicy
from nexa_gateway.settings import Settings

DAY = 86400.0


def confirmed_tier(session: Session, worker: Worker) -> str:
    """The node's tier when benchmarks confirm it; 'cpu' (the base rate) until they do."""
    tier = str((worker.hardware or {}).get("tier") or "cpu")
    return tier if benchmarks.tier_confirmed(session, worker) else "cpu"


def credit_policy(settings: Settings) -> CreditPolicy:
    return CreditPolicy(
        tier_rates=dict(settings.credit_tier_rates),
        slack=settings.credit_slack,
        lost_lease_penalty=settings.lost_lease_penalty,
        half_life_seconds=settings.reputation_half_life_days * DAY,
        gflops=benchmarks.verified_gflops,
        tier=confirmed_tier,
    )


def holdback(settings: Settings) -> Holdback:
    return Holdback(
        below=settings.holdback_below_reputation,
        seconds=settings.holdback_seconds,
        half_life_seconds=settings.reputation_half_life_days * DAY,
    )
