"""A node's standing: reputation from its record, credits for verified work (docs/mesh.md).

Reputation is ``(0.7 × agreement + 0.3 × reliability) × honesty``, where

- agreement = (agreed + 1) / (agreed + outliers + 2): how often its verified replicas matched the
  accepted result (a node with no record scores 0.5);
- reliability = (finished + 1) / (finished + lost + 2): attempts it finished against leases it lost
  (uptime, as the platform sees it);
- honesty = 1 / (1 + refused): reports it sent with a forged or wrong signature.

Every count fades with a half-life (``reputation_half_life_days``), so an old record weighs less
than a new one and a node can earn its way back.

Credits are granted only for verified work: a replica a quorum accepted, or a job a spot check
confirmed. A grant is ``work × tier rate`` where work = seconds (the gateway's clock, from claim to
result) × the node's throughput as the coordinator measured it (``services.benchmarks``, never the
node's own report), in TFLOP, capped at ``credit_slack`` × the median work of the other replicas
that agreed, so a node that dawdles is not paid for it. A tenant's own node working for that tenant
moves no record, and cannot condemn another node on its own. An outlier is charged what it would have earned;
a lost lease costs ``lost_lease_penalty``. Each grant and penalty is an entry in the node's
``credits:<node>`` stream of the hash-chained ledger, in the transaction that decides it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa_gateway.db import (
    JobReplica,
    JobVerification,
    LedgerEntry,
    NodeRecord,
    Worker,
    WorkerOwner,
    utcnow,
)
from nexa_gateway.services import ledger

NEUTRAL = 0.5
DEFAULT_HALF_LIFE = 30 * 86400.0


@dataclass(frozen=True)
class CreditPolicy:
    tier_rates: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0})
    slack: float = 1.5
    lost_lease_penalty: float = 1.0
    half_life_seconds: float = 30 * 86400.0
    # The node's throughput as the coordinator measured it, in GFLOP/s (None: never measured).
    gflops: Callable[[Session, str], float | None] = lambda session, worker_id: None
    # The node's tier once confirmed; unconfirmed tiers earn the 'cpu' rate.
    tier: Callable[[Session, Worker], str] = lambda session, worker: "cpu"


# ---------------------------------------------------------------- pure parts


def fade(value: float, seconds: float, half_life_seconds: float) -> float:
    return float(value * 0.5 ** (max(0.0, seconds) / half_life_seconds))


def score(agreed: float, outliers: float, finished: float, lost: float, refused: float) -> float:
    agreement = (agreed + 1) / (agreed + outliers + 2)
    reliability = (finished + 1) / (finished + lost + 2)
    honesty = 1 / (1 + refused)
    return round((0.7 * agreement + 0.3 * reliability) * honesty, 6)


def credited_work(own: float, agreed_work: list[float], slack: float) -> float:
    """TFLOP a replica is credited for: its own work, at most ``slack`` × the median work of the
    other agreeing replicas."""
    if not agreed_work:
        return own
    return min(own, slack * statistics.median(agreed_work))


# ---------------------------------------------------------------- records


def node_key_of(session: Session, worker_id: str) -> str:
    from nexa_gateway.services.reportsigs import public_key_of

    return public_key_of(session, worker_id) or worker_id


def _record(session: Session, node_key: str, worker_id: str, policy: CreditPolicy) -> NodeRecord:
    """The node's record, locked for this transaction and faded to now."""
    for _ in range(3):
        row = session.get(NodeRecord, node_key, with_for_update=True, populate_existing=True)
        if row is not None:
            break
        try:
            with session.begin_nested():
                session.add(NodeRecord(node_key=node_key, worker_id=worker_id, updated_at=utcnow()))
                session.flush()
        except IntegrityError:
            continue  # created meanwhile: read it
    else:
        raise RuntimeError(f"node record {node_key}: could not create or read it")
    assert row is not None
    now = utcnow()
    elapsed = (now - row.updated_at).total_seconds()
    for name in ("agreed", "outliers", "finished", "lost", "refused"):
        setattr(row, name, fade(float(getattr(row, name) or 0.0), elapsed, policy.half_life_seconds))
    row.updated_at, row.worker_id = now, worker_id
    return row


def _rescore(row: NodeRecord) -> None:
    row.reputation = score(row.agreed, row.outliers, row.finished, row.lost, row.refused)


def current(row: NodeRecord, now: datetime, half_life_seconds: float) -> float:
    """A stored record's reputation as of ``now`` (its counts faded since it was written)."""
    elapsed = (now - row.updated_at).total_seconds()
    faded = [
        fade(float(getattr(row, name) or 0.0), elapsed, half_life_seconds)
        for name in ("agreed", "outliers", "finished", "lost", "refused")
    ]
    return score(*faded)


def reputation_of(session: Session, worker_id: str, half_life_seconds: float = 30 * 86400.0) -> float:
    return standing(session, node_key_of(session, worker_id), half_life_seconds)


def standing(session: Session, node_key: str, half_life_seconds: float = 30 * 86400.0) -> float:
    """The reputation of the node with this key, now."""
    row = session.get(NodeRecord, node_key)
    return NEUTRAL if row is None else current(row, utcnow(), half_life_seconds)


def _entry(
    session: Session, row: NodeRecord, kind: str, credits: float, job_id: str | None, reason: str
) -> None:
    amount = round(credits, 6)
    ledger.append(
        session,
        credit_stream(row.node_key),
        kind,
        job_id or "",
        {"credits": amount, "job_id": job_id, "worker_id": row.worker_id, "reason": reason},
    )
    row.credits = round(row.credits + amount, 6)
    if amount >= 0:
        row.granted = round(row.granted + amount, 6)
    else:
        row.penalties = round(row.penalties - amount, 6)


def credit_stream(node_key: str) -> str:
    return f"credits:{node_key}"


# ---------------------------------------------------------------- what moves a record


def attempt_finished(session: Session, worker_id: str, policy: CreditPolicy) -> None:
    row = _record(session, node_key_of(session, worker_id), worker_id, policy)
    row.finished += 1
    _rescore(row)


def lease_lost(session: Session, worker_id: str, job_id: str, policy: CreditPolicy) -> None:
    row = _record(session, node_key_of(session, worker_id), worker_id, policy)
    row.lost += 1
    row.lost_count += 1
    if policy.lost_lease_penalty > 0:
        _entry(session, row, "penalty", -policy.lost_lease_penalty, job_id, "lost the lease of an attempt")
    _rescore(row)


def report_refused(session: Session, worker_id: str, policy: CreditPolicy) -> None:
    row = _record(session, node_key_of(session, worker_id), worker_id, policy)
    row.refused += 1
    _rescore(row)


def replica_judged(
    session: Session,
    replica: JobReplica,
    verdict: str,
    check: JobVerification,
    policy: CreditPolicy,
) -> None:
    """A quorum (or spot check) judged ``replica``: move its node's record and credits."""
    if replica.worker_id is None:
        return
    owners = _owners(session, replica.parent_id)
    if owners.get(replica.job_id) == check.tenant_id:
        # A tenant's own node working for that tenant proves nothing to anyone else: no record moves.
        return
    worker = session.get(Worker, replica.worker_id)
    agreed_work = _agreed_work(session, replica.parent_id, policy, besides=replica.job_id)
    if verdict == "outlier" and all(
        owners.get(job_id) == check.tenant_id for job_id in _agreeing(session, replica.parent_id)
    ):
        # Outvoted only by the job's tenant's own nodes: they cannot condemn a node outside the tenant.
        return
    row = _record(session, replica.node_key or replica.worker_id, replica.worker_id, policy)
    own = _work(session, replica, policy)
    rate = policy.tier_rates.get(policy.tier(session, worker) if worker is not None else "cpu", 1.0)
    job_id = replica.job_id
    if verdict == "agreed":
        row.agreed += 1
        row.verified_jobs += 1
        if own is None:
            _entry(
                session, row, "credit", 0.0, job_id, "verified, but the node's throughput was never measured"
            )
        else:
            credited = credited_work(own, agreed_work, policy.slack)
            why = "spot check confirmed it" if check.purpose == "spot_check" else "the quorum accepted it"
            _entry(
                session,
                row,
                "credit",
                credited * rate,
                job_id,
                f"{why}: {credited:.3f} TFLOP x {rate} ({row.worker_id})",
            )
    elif verdict == "outlier":
        row.outliers += 1
        row.outlier_count += 1
        base = statistics.median(agreed_work) if agreed_work else (own or 0.0)
        penalty = max(1.0, min(own or base, policy.slack * base) * rate)
        _entry(session, row, "penalty", -penalty, job_id, "its output disagreed with the accepted result")
    _rescore(row)


def _work(session: Session, replica: JobReplica, policy: CreditPolicy) -> float | None:
    """TFLOP a replica did by the gateway's clock and the coordinator's measurement of its node."""
    if replica.worker_id is None or replica.seconds is None:
        return None
    gflops = policy.gflops(session, replica.worker_id)
    if gflops is None:
        return None
    return replica.seconds * gflops / 1000.0


def _agreed_work(session: Session, parent_id: str, policy: CreditPolicy, besides: str) -> list[float]:
    """The work of the other replicas that agreed: a replica's pay is capped by its peers', never
    by its own time (a dawdler would otherwise set its own cap)."""
    agreed = session.scalars(
        select(JobReplica).where(
            JobReplica.parent_id == parent_id, JobReplica.verdict == "agreed", JobReplica.job_id != besides
        )
    )
    return [w for w in (_work(session, r, policy) for r in agreed) if w is not None]


def _agreeing(session: Session, parent_id: str) -> list[str]:
    return list(
        session.scalars(
            select(JobReplica.job_id).where(JobReplica.parent_id == parent_id, JobReplica.verdict == "agreed")
        )
    )


def _owners(session: Session, parent_id: str) -> dict[str, str]:
    """Replica job id -> the tenant that owns the node it ran on (platform nodes are absent)."""
    rows = session.execute(
        select(JobReplica.job_id, WorkerOwner.tenant_id)
        .join(WorkerOwner, WorkerOwner.worker_id == JobReplica.worker_id)
        .where(JobReplica.parent_id == parent_id)
    )
    return {str(job_id): str(tenant) for job_id, tenant in rows}


# ---------------------------------------------------------------- reading


def entries(session: Session, node_key: str, limit: int = 50) -> list[LedgerEntry]:
    return list(
        session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.stream == credit_stream(node_key))
            .order_by(LedgerEntry.seq.desc())
            .limit(limit)
        )
    )


def summary(row: NodeRecord | None, now: datetime, half_life_seconds: float) -> dict[str, Any]:
    if row is None:
        return {
            "credits": 0.0,
            "granted": 0.0,
            "penalties": 0.0,
            "verified_jobs": 0,
            "outliers": 0,
            "lost_leases": 0,
            "reputation": NEUTRAL,
        }
    return {
        "credits": row.credits,
        "granted": row.granted,
        "penalties": row.penalties,
        "verified_jobs": row.verified_jobs,
        "outliers": row.outlier_count,
        "lost_leases": row.lost_count,
        "reputation": current(row, now, half_life_seconds),
    }
