"""Storage, metered by the hour, and artifacts expired by age.

Every tick charges each tenant for what its registered artifacts hold (the sum of their
``size_bytes``) during the current hour: bytes / 10⁹ / 730 GB-months (a month is 730 hours, as the
price books prorate), as ``storage_gb_months`` usage. The usage table's unique key (subject, attempt,
kind) makes that once per tenant and hour, however many ticks or gateway replicas see the hour: the
subject is the tenant's month (``storage_subject``) and the attempt is the hour's index within it.
What is deleted before an hour's tick is not charged for that hour or after.

With ``NEXA_ARTIFACT_RETENTION_DAYS`` set, each tick also deletes the artifacts older than that,
through the same path as a user's delete (``services.deletion``, ledger reason ``retention``),
never one that something still needs: another artifact made from it, an unfinished job naming it,
or a deployment serving it. Those are kept and logged; they expire once nothing needs them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nexa.contracts.workers import UsageRecord
from nexa_gateway.db import Artifact
from nexa_gateway.errors import ApiError
from nexa_gateway.services import billing, deletion
from nexa_gateway.services.attemptusage import ensure_subject
from nexa_gateway.services.queue import record_usage

if TYPE_CHECKING:
    from nexa_gateway.state import AppState

log = logging.getLogger("nexa.gateway.storagemeter")

KIND = "storage_gb_months"
SUBJECT_TYPE = "storage"  # the job type the bill shows storage under
HOURS_PER_MONTH = 730
BYTES_PER_GB = 10**9
RETENTION_SCAN = 2000  # artifacts kept (still needed) looked past per tick, at most
RETENTION_BATCH = 200  # artifacts expired per tick at most; the next tick goes on
_SUBJECT_MAX = 40  # usage.job_id's width
HOUR_MARGIN_SECONDS = 1.0  # past the hour's start, so a clock a little behind still lands in it


@dataclass
class Tick:
    """What one tick did."""

    metered: dict[str, float] = field(default_factory=dict)  # tenant → GB-months newly recorded
    expired: list[str] = field(default_factory=list)  # artifacts deleted by retention
    kept: list[str] = field(default_factory=list)  # old artifacts kept because something needs them


def hour_of_month(now: datetime) -> tuple[str, int]:
    """(``YYYYMM``, the hour's index within the month from 0) of ``now`` in UTC."""
    now = now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return now.strftime("%Y%m"), int((now - start).total_seconds() // 3600)


def storage_subject(tenant_id: str, month: str) -> str:
    """The usage subject of a tenant's storage in a month: ``st-<tenant id>-<YYYYMM>``.

    Usage rows name their subject in 40 characters; a tenant id longer than Nexa's own (30) is
    replaced by a hash of it so that the subject still fits and stays one per tenant and month.
    """
    subject = f"st-{tenant_id}-{month}"
    if len(subject) <= _SUBJECT_MAX:
        return subject
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[: _SUBJECT_MAX - len("st--") - len(month)]
    return f"st-{digest}-{month}"


def gb_months(size_bytes: int, hours: float = 1.0) -> float:
    """What ``size_bytes`` stored for ``hours`` is in GB-months."""
    return size_bytes / BYTES_PER_GB * hours / HOURS_PER_MONTH


def meter_storage(session: Session, now: datetime) -> dict[str, float]:
    """Charge every tenant's stored bytes for the hour ``now`` falls in, once; returns what was new."""
    month, hour = hour_of_month(now)
    totals = session.execute(
        select(Artifact.tenant_id, func.sum(Artifact.size_bytes)).group_by(Artifact.tenant_id)
    ).all()
    recorded: dict[str, float] = {}
    for tenant_id, total in totals:
        size = int(total or 0)
        if size <= 0:
            continue  # nothing stored: no charge, and no row saying so
        subject = storage_subject(tenant_id, month)
        ensure_subject(session, subject, tenant_id, SUBJECT_TYPE, None)
        amount = gb_months(size)
        if record_usage(session, tenant_id, subject, hour, [UsageRecord(kind=KIND, amount=amount)]):
            recorded[tenant_id] = amount
    session.commit()
    return recorded


def expire_old(session: Session, state: AppState, now: datetime, days: int) -> tuple[list[str], list[str]]:
    """Delete artifacts registered more than ``days`` ago that nothing needs; (expired, kept)."""
    cutoff = now - timedelta(days=days)
    expired: list[str] = []
    kept: list[str] = []
    after: tuple[datetime, str] | None = None
    # Newest first: an old artifact made from another old one goes first, so the one it was made
    # from is free to go in the same tick. Paged past the ones that are kept, so a run of artifacts
    # something still needs never stalls retention behind it.
    while len(expired) < RETENTION_BATCH and len(kept) < RETENTION_SCAN:
        query = select(Artifact.id, Artifact.tenant_id, Artifact.created_at).where(
            Artifact.created_at < cutoff
        )
        if after is not None:
            query = query.where(
                (Artifact.created_at < after[0])
                | ((Artifact.created_at == after[0]) & (Artifact.id < after[1]))
            )
        page = session.execute(
            query.order_by(Artifact.created_at.desc(), Artifact.id.desc()).limit(RETENTION_BATCH)
        ).all()
        if not page:
            break
        after = (page[-1][2], page[-1][0])
        for artifact_id, tenant_id, _created in page:
            if len(expired) >= RETENTION_BATCH:
                break
            # Read afresh for each: a job submitted during the tick that names the artifact keeps it.
            tenant_jobs = deletion.unfinished_jobs(session, state, tenant_id)
            try:
                deletion.delete_artifact(
                    session, state, tenant_id, artifact_id, force=False, reason="retention", jobs=tenant_jobs
                )
            except deletion.InUse as exc:
                session.rollback()
                kept.append(artifact_id)
                log.info("retention keeps %s: %s", artifact_id, exc.message)
                continue
            except ApiError as exc:  # gone meanwhile (another replica), or its files could not be removed
                session.rollback()
                log.warning("retention could not delete %s: %s", artifact_id, exc.message)
                continue
            session.commit()
            expired.append(artifact_id)
            log.info("retention deleted %s (older than %d days)", artifact_id, days)
    return expired, kept


def seconds_to_next_tick(interval: float, now: datetime | None = None) -> float:
    """How long the loop sleeps: ``interval``, cut short to land just after the next hour begins, so
    that every hour has a tick in it however the ticks drift."""
    now = now or datetime.now(UTC)
    into_hour = now.minute * 60 + now.second + now.microsecond / 1e6
    return max(1.0, min(interval, 3600 - into_hour + HOUR_MARGIN_SECONDS))


def count_metrics(state: AppState, done: Tick) -> None:
    """Newly metered storage on /metrics, priced by the book in force now (Grafana's spend by type)."""
    book, now = state.settings.prices(), datetime.now(UTC)
    for amount in done.metered.values():
        state.metrics.usage.labels(KIND).inc(amount)
        cost = billing.charge(book, SUBJECT_TYPE, None, KIND, amount, now)
        state.metrics.spend.labels(SUBJECT_TYPE).inc(float(cost))


def tick(state: AppState, now: datetime | None = None) -> Tick:
    """One pass of the storage loop: expire first (what goes is not charged this hour), then meter."""
    now = now or datetime.now(UTC)
    done = Tick()
    days = state.settings.artifact_retention_days
    if days > 0:
        with state.db.session() as session:
            done.expired, done.kept = expire_old(session, state, now, days)
    with state.db.session() as session:
        done.metered = meter_storage(session, now)
    return done
