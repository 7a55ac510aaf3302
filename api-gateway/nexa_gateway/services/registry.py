"""The node registry: every worker with its state, profile and owner, as a caller may see them.

A platform admin sees the whole fleet; any other key sees the nodes its own tenant
registered (with node tokens), never the platform's machines or another tenant's.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts.keys import Role
from nexa.contracts.workers import WorkerInfo
from nexa_gateway.db import Job, NodeRecord, Worker, WorkerKey, WorkerOwner, WorkerStatus, utcnow
from nexa_gateway.errors import not_found
from nexa_gateway.services import benchmarks, reputation

LOST_AFTER_LEASES = 3


def _visible(
    session: Session, tenant_id: str, role: Role
) -> list[tuple[Worker, str | None, str | None, str | None]]:
    """(worker, owner tenant, drained/revoked status, public key) of every node this key may see."""
    query = (
        select(Worker, WorkerOwner.tenant_id, WorkerStatus.state, WorkerKey.public_key)
        .outerjoin(WorkerOwner, WorkerOwner.worker_id == Worker.id)
        .outerjoin(WorkerStatus, WorkerStatus.worker_id == Worker.id)
        .outerjoin(WorkerKey, WorkerKey.worker_id == Worker.id)
    )
    if not role.at_least(Role.platform_admin):
        query = query.where(WorkerOwner.tenant_id == tenant_id)
    rows = session.execute(query.order_by(Worker.registered_at, Worker.id)).all()
    return [(w, owner, status, key) for w, owner, status, key in rows]


def list_workers(
    session: Session, tenant_id: str, role: Role, lease_seconds: int, worker_id: str | None = None
) -> list[WorkerInfo]:
    rows = _visible(session, tenant_id, role)
    if worker_id is not None:
        rows = [row for row in rows if row[0].id == worker_id]
    running: dict[str, list[str]] = defaultdict(list)
    ids = [row[0].id for row in rows]
    if ids:
        for job_id, holder in session.execute(
            select(Job.id, Job.worker_id).where(Job.status == "running", Job.worker_id.in_(ids))
        ):
            running[str(holder)].append(str(job_id))
    lost_before = utcnow() - timedelta(seconds=LOST_AFTER_LEASES * lease_seconds)
    verified = benchmarks.verified_for(session, ids)
    # Standing is kept by node key: the public key, or the worker id of a node without one.
    keys = {w.id: (key or w.id) for w, _, _, key in rows}
    records = (
        {
            r.node_key: r
            for r in session.scalars(select(NodeRecord).where(NodeRecord.node_key.in_(set(keys.values()))))
        }
        if keys
        else {}
    )
    now = utcnow()
    out = []
    for worker, owner, status, key in rows:
        state = status or (
            "busy" if running.get(worker.id) else "lost" if worker.last_seen_at < lost_before else "idle"
        )
        measured = verified.get(worker.id, {})
        cpu = measured.get(benchmarks.CPU)
        tier = (worker.hardware or {}).get("tier")
        out.append(
            WorkerInfo(
                worker_id=worker.id,
                name=worker.name,
                state=state,
                tier=tier,
                hardware=dict(worker.hardware or {}),
                job_types=[str(t) for t in worker.job_types or []],
                version=worker.version,
                owner_tenant_id=owner,
                public_key=key,
                running_jobs=sorted(running.get(worker.id, [])),
                registered_at=worker.registered_at,
                last_heartbeat_at=worker.last_seen_at,
                verified_gflops=cpu.gflops if cpu is not None else None,
                verified_at=cpu.verified_at if cpu is not None else None,
                tier_confirmed=benchmarks.confirms_tier(tier, measured),
                reputation=(
                    reputation.current(record, now, reputation.DEFAULT_HALF_LIFE)
                    if (record := records.get(keys[worker.id])) is not None
                    else reputation.NEUTRAL
                ),
                credits=record.credits if record is not None else 0.0,
            )
        )
    return out


def get_worker(
    session: Session, tenant_id: str, role: Role, lease_seconds: int, worker_id: str
) -> WorkerInfo:
    found = list_workers(session, tenant_id, role, lease_seconds, worker_id)
    if not found:
        raise not_found("worker", worker_id)
    return found[0]
