"""Pending jobs no live node can run say so, with the reason, instead of waiting silently.

The claim query matches a job's resources against the node that asks (``queue.claim_next_job``).
A job that no live node could ever be handed would wait forever without a word; a sweep in the
gateway's reaper loop checks the oldest pending jobs against the live fleet (nodes heard from in
the last ``LOST_AFTER_LEASES`` leases) with the same rules, and marks one that fits nowhere:
its progress message becomes ``unschedulable: <the first unmet requirement>`` and its timeline
gets an ``unschedulable`` event. It stays pending: a node that fits can still join, and then the
message says it is waiting again. ``fits`` is pure and table-tested against the claim query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nexa_gateway.db import Job, JobRequirement, Worker, WorkerOwner, WorkerStatus
from nexa_gateway.services.jobs import add_event
from nexa_gateway.services.registry import LOST_AFTER_LEASES

SWEEP_LIMIT = 500  # the oldest pending jobs looked at per sweep
UNSCHEDULABLE = "unschedulable"
WAITING = "waiting for a worker that fits"


@dataclass(frozen=True)
class Need:
    """A pending job's requirements, as the claim query matches them."""

    job_type: str
    tenant_id: str
    gpus: int
    gpu_type: str | None
    tier: str | None
    cpu: float | None = None
    memory_gb: float | None = None
    disk_gb: float | None = None
    gpu_memory_gb: float | None = None


@dataclass(frozen=True)
class Node:
    hardware: dict[str, Any]
    job_types: frozenset[str]
    owner: str | None


def _offered(node: Node, key: str) -> float | None:
    value = node.hardware.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _checks(need: Need) -> list[tuple[str, Callable[[Node], bool], Callable[[Sequence[Node]], str]]]:
    """(what, does this node meet it, why no node does) in the order a reason names them."""

    def most(key: str, unit: str) -> Callable[[Sequence[Node]], str]:
        def why(nodes: Sequence[Node]) -> str:
            known = [v for v in (_offered(n, key) for n in nodes) if v is not None]
            return f" (the most any offers: {max(known):g}{unit})" if known else ""

        return why

    def amount(key: str, wanted: float | None) -> Callable[[Node], bool]:
        def ok(node: Node) -> bool:
            have = _offered(node, key)
            return wanted is None or have is None or wanted <= have

        return ok

    checks: list[tuple[str, Callable[[Node], bool], Callable[[Sequence[Node]], str]]] = [
        (f"runs {need.job_type} jobs", lambda n: need.job_type in n.job_types, lambda _: ""),
        (
            "is the platform's or this tenant's",
            lambda n: n.owner is None or n.owner == need.tenant_id,
            lambda _: "",
        ),
        (
            f"has {need.gpus} GPU(s)",
            lambda n: need.gpus <= int(n.hardware.get("gpus") or 0),
            most("gpus", ""),
        ),
    ]
    if need.gpu_type:
        wanted = need.gpu_type
        checks.append((f"has {wanted} GPUs", lambda n: n.hardware.get("gpu_type") == wanted, lambda _: ""))
    if need.tier:
        tier = need.tier
        checks.append((f"is of tier {tier}", lambda n: n.hardware.get("tier", "cpu") == tier, lambda _: ""))
    checks += [
        (f"has {need.cpu:g} CPUs" if need.cpu else "", amount("cpu_count", need.cpu), most("cpu_count", "")),
        (
            f"has {need.memory_gb:g} GiB of memory" if need.memory_gb else "",
            amount("memory_gb", need.memory_gb),
            most("memory_gb", " GiB"),
        ),
        (
            f"has {need.disk_gb:g} GiB of free disk" if need.disk_gb else "",
            amount("disk_gb", need.disk_gb),
            most("disk_gb", " GiB"),
        ),
        (
            f"has {need.gpu_memory_gb:g} GiB on each GPU" if need.gpu_memory_gb else "",
            amount("gpu_memory_gb", need.gpu_memory_gb),
            most("gpu_memory_gb", " GiB"),
        ),
    ]
    return checks


def fits(need: Need, node: Node) -> bool:
    """Whether the claim query would hand ``need``'s job to ``node``."""
    return all(ok(node) for _, ok, _ in _checks(need))


def reason(need: Need, nodes: Sequence[Node]) -> str | None:
    """Why no node in ``nodes`` can run the job, naming the first requirement none meets; None if one can."""
    if any(fits(need, node) for node in nodes):
        return None
    if not nodes:
        return "no worker is connected"
    for what, ok, why in _checks(need):
        if what and not any(ok(node) for node in nodes):
            return f"no connected worker {what}{why(nodes)}"
    return "no connected worker meets all of its requirements at once"


def _live_nodes(session: Session, now: datetime, lease_seconds: int) -> list[Node]:
    since = now - timedelta(seconds=LOST_AFTER_LEASES * lease_seconds)
    rows = session.execute(
        select(Worker.hardware, Worker.job_types, WorkerOwner.tenant_id)
        .outerjoin(WorkerOwner, WorkerOwner.worker_id == Worker.id)
        .outerjoin(WorkerStatus, WorkerStatus.worker_id == Worker.id)
        .where(Worker.last_seen_at >= since, WorkerStatus.state.is_(None))  # not drained, not revoked
    ).all()
    return [Node(dict(hw or {}), frozenset(str(t) for t in types or []), owner) for hw, types, owner in rows]


def sweep(session: Session, now: datetime, lease_seconds: int) -> list[str]:
    """Mark pending jobs no live node fits (and unmark those one now fits); the jobs changed."""
    nodes = _live_nodes(session, now, lease_seconds)
    pending = session.execute(
        select(Job, JobRequirement)
        .outerjoin(JobRequirement, JobRequirement.job_id == Job.id)
        .where(Job.status == "pending")
        .order_by(Job.created_at)
        .limit(SWEEP_LIMIT)
    ).all()
    changed = []
    for job, req in pending:
        need = Need(
            job_type=job.job_type,
            tenant_id=job.tenant_id,
            gpus=job.gpus,
            gpu_type=job.gpu_type,
            tier=job.tier,
            cpu=req.cpu if req else None,
            memory_gb=req.memory_gb if req else None,
            disk_gb=req.disk_gb if req else None,
            gpu_memory_gb=req.gpu_memory_gb if req else None,
        )
        # Only the nodes this job could ever be handed: the platform's and its own tenant's. The reason
        # (and its "the most any offers" figures) never describes another tenant's machines.
        why = reason(need, [n for n in nodes if n.owner is None or n.owner == job.tenant_id])
        marked = (job.progress_message or "").startswith(UNSCHEDULABLE)
        if why is not None and job.progress_message != f"{UNSCHEDULABLE}: {why}":
            text = f"{UNSCHEDULABLE}: {why}"
        elif why is None and marked:
            text = WAITING
        else:
            continue
        done = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "pending", Job.attempt == job.attempt)
            .values(progress_message=text, updated_at=now)
            .returning(Job.id)
        ).scalar_one_or_none()
        if done is None:
            continue
        changed.append(job.id)
        if why is None or not marked:  # the timeline records the change of state, not each new figure
            add_event(session, job.id, UNSCHEDULABLE if why else "schedulable", text, job.attempt)
    return changed
