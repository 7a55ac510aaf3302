"""Deployment time, metered by the second.

A deployment is charged for as long as its serving process ran: from the start its
record names to the exit the process recorded in the store. Once a deployment has
stopped, that time is recorded as ``deployment_hours`` usage of the deploy job's
attempt; the usage table's unique key (job, attempt, kind) makes it once, however
many gateway replicas or ticks see the same stop.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from nexa.contracts.workers import UsageRecord
from nexa_gateway.db import Artifact, Job, Usage
from nexa_gateway.services.queue import record_usage
from nexa_store.base import ArtifactError, ArtifactStore
from nexa_store.serving import DEPLOYMENT_FILE, stopped_at

log = logging.getLogger("nexa.gateway.deploymeter")

KIND = "deployment_hours"
BATCH = 500


def started_at(store: ArtifactStore, deployment_id: str, fallback: datetime) -> datetime:
    """When a deployment began serving: the start its record names, else ``fallback`` (its registration)."""
    try:
        value = json.loads(store.read_file(deployment_id, DEPLOYMENT_FILE)).get("started_at")
        return datetime.fromisoformat(str(value))
    except (ArtifactError, ValueError, AttributeError):
        return fallback


def meter_stopped(session: Session, store: ArtifactStore) -> list[str]:
    """Record the running time of every stopped, not yet metered deployment; the deploy jobs metered."""
    pending = session.execute(
        select(Artifact.id, Artifact.created_at, Job.id, Job.tenant_id, Job.attempt)
        .join(Job, Job.id == Artifact.job_id)
        .where(Artifact.kind == "deployment")
        .where(~exists().where(and_(Usage.job_id == Job.id, Usage.kind == KIND)))
        .order_by(Artifact.created_at)
        .limit(BATCH)
    ).all()
    metered = []
    for deployment_id, created_at, job_id, tenant_id, attempt in pending:
        try:
            ended = stopped_at(store, deployment_id)
        except ArtifactError as exc:
            log.warning("deployment %s: stop record unreadable: %s", deployment_id, exc)
            continue
        if ended is None:
            continue  # still serving: charged once it stops
        started = started_at(store, deployment_id, created_at.replace(tzinfo=UTC))
        seconds = max(0.0, (ended - started).total_seconds())
        hours = round(seconds / 3600, 6)  # to the second (1/3600 h is 0.000278)
        if record_usage(session, tenant_id, job_id, attempt, [UsageRecord(kind=KIND, amount=hours)]):
            metered.append(job_id)
    session.commit()
    return metered
