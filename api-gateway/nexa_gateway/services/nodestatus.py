"""Draining and revoking single nodes.

- **drain**: the node claims nothing new (its claims answer "no job") and finishes what it runs.
  ``resume`` undoes it.
- **revoke**: the node is cut off. Its worker token is refused on every route (401), and the
  attempts it holds go back to the queue at once as ``worker_revoked``. That is the platform's
  loss: not charged, and another attempt runs them. Its Ed25519 public key can never register
  again (403 ``node_revoked``). A revocation is final.

Who may: a platform admin, for any node; a tenant's admin, for the nodes that tenant registered
with its node tokens. Anyone else sees 404, as for a node that does not exist.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts import ErrorCode
from nexa.contracts.keys import Role
from nexa_gateway.db import Job, Worker, WorkerKey, WorkerOwner, WorkerStatus, utcnow
from nexa_gateway.errors import ApiError, not_found
from nexa_gateway.metrics import FinishedJob
from nexa_gateway.services.jobs import finished_job

DRAINING = "draining"
REVOKED = "revoked"


def status_of(session: Session, worker_id: str) -> str | None:
    return session.scalar(select(WorkerStatus.state).where(WorkerStatus.worker_id == worker_id))


def is_revoked_key(session: Session, public_key: str, owner: str | None) -> bool:
    """Whether a node with this key was revoked by whoever manages nodes of ``owner`` (a tenant, or
    None: the platform). Scoped so that one tenant cannot bar a key it does not own by registering it
    under its own node token and revoking that."""
    owned = WorkerOwner.tenant_id == owner if owner is not None else WorkerOwner.tenant_id.is_(None)
    query = (
        select(WorkerKey.worker_id)
        .join(WorkerStatus, WorkerStatus.worker_id == WorkerKey.worker_id)
        .outerjoin(WorkerOwner, WorkerOwner.worker_id == WorkerKey.worker_id)
        .where(WorkerKey.public_key == public_key, WorkerStatus.state == REVOKED, owned)
        .limit(1)
    )
    return session.scalar(query) is not None


def _manageable(session: Session, tenant_id: str, role: Role, worker_id: str) -> Worker:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise not_found("worker", worker_id)
    if role.at_least(Role.platform_admin):
        return worker
    owner = session.scalar(select(WorkerOwner.tenant_id).where(WorkerOwner.worker_id == worker_id))
    if owner != tenant_id:
        raise not_found("worker", worker_id)  # not one of this tenant's nodes: nothing to see
    if not role.at_least(Role.admin):
        raise ApiError(403, "forbidden", "draining or revoking a node needs an admin key of its tenant")
    return worker


def _set(session: Session, worker_id: str, state: str | None, reason: str) -> None:
    row = session.get(WorkerStatus, worker_id)
    if row is not None and row.state == REVOKED:
        raise ApiError(409, "node_revoked", f"worker {worker_id} is revoked; a revocation is final")
    if state is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(WorkerStatus(worker_id=worker_id, state=state, reason=reason[:2000]))
    else:
        row.state, row.reason, row.changed_at = state, reason[:2000], utcnow()
    session.flush()


def drain(session: Session, tenant_id: str, role: Role, worker_id: str, reason: str = "") -> None:
    _manageable(session, tenant_id, role, worker_id)
    _set(session, worker_id, DRAINING, reason)


def resume(session: Session, tenant_id: str, role: Role, worker_id: str) -> None:
    _manageable(session, tenant_id, role, worker_id)
    _set(session, worker_id, None, "")


def revoke(
    session: Session, tenant_id: str, role: Role, worker_id: str, reason: str = ""
) -> tuple[list[str], list[FinishedJob]]:
    """Revoke the node; its running attempts end ``worker_revoked`` (requeued while retries remain)."""
    from nexa_gateway.services.queue import end_attempt_of

    _manageable(session, tenant_id, role, worker_id)
    _set(session, worker_id, REVOKED, reason)
    changed: list[str] = []
    finished: list[FinishedJob] = []
    for job in list(session.scalars(select(Job).where(Job.status == "running", Job.worker_id == worker_id))):
        try:
            with session.begin_nested():
                end_attempt_of(
                    session,
                    job,
                    code=ErrorCode.worker_revoked,
                    message=f"worker {worker_id} was revoked" + (f": {reason}" if reason else ""),
                )
        except ApiError:
            continue  # its report arrived at the same moment: the attempt ended on its own
        changed.append(job.id)
        if job.status in ("failed", "cancelled", "completed"):
            finished.append(finished_job(session, job))
    return changed, finished
