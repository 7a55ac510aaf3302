"""Node tokens: every node (worker) registered with one has an owner, and runs only its owner's jobs.

The shared worker secret (``NEXA_WORKER_SECRET``) registers the platform's own
workers, which claim any tenant's jobs; ``nexa up``'s local workers are such.
A tenant admin makes a node token for the machines the tenant brings; a node
registered with it is the tenant's, claims only the tenant's jobs, and is cut off
when the token is revoked.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts.keys import NodeTokenCreated, NodeTokenInfo
from nexa.ids import new_id
from nexa_gateway.db import NodeToken, WorkerOwner, utcnow
from nexa_gateway.services.keys import hash_key

NODE_TOKEN_PREFIX = "nexan_"


def _info(row: NodeToken) -> NodeTokenInfo:
    return NodeTokenInfo(
        token_id=row.id,
        name=row.name,
        prefix=row.prefix,
        tenant_id=row.tenant_id,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create(session: Session, tenant_id: str, name: str) -> NodeTokenCreated:
    token = NODE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = NodeToken(
        id=new_id("ntk"), tenant_id=tenant_id, name=name, prefix=token[:12], token_hash=hash_key(token)
    )
    session.add(row)
    session.flush()
    return NodeTokenCreated(**_info(row).model_dump(), token=token)


def list_tokens(session: Session, tenant_id: str) -> list[NodeTokenInfo]:
    rows = session.scalars(
        select(NodeToken).where(NodeToken.tenant_id == tenant_id).order_by(NodeToken.created_at, NodeToken.id)
    )
    return [_info(r) for r in rows]


def revoke(session: Session, tenant_id: str, token_id: str) -> NodeTokenInfo | None:
    row = session.scalar(select(NodeToken).where(NodeToken.id == token_id, NodeToken.tenant_id == tenant_id))
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return _info(row)


def token_owner(session: Session, token: str) -> NodeToken | None:
    """The live node token ``token`` is, else None."""
    if not token.startswith(NODE_TOKEN_PREFIX):
        return None
    row = session.scalar(select(NodeToken).where(NodeToken.token_hash == hash_key(token)))
    return row if row is not None and row.revoked_at is None else None


def record_owner(session: Session, worker_id: str, token: NodeToken) -> None:
    session.add(WorkerOwner(worker_id=worker_id, tenant_id=token.tenant_id, node_token_id=token.id))
    session.flush()


def owner_of_worker(session: Session, worker_id: str) -> str | None:
    """The tenant that owns the worker; None for the platform's own workers."""
    return session.scalar(select(WorkerOwner.tenant_id).where(WorkerOwner.worker_id == worker_id))


def store_through_gateway(mode: str, owned: bool) -> bool:
    """Whether a worker reaches the artifact store through the gateway (``worker_store_access``)."""
    return mode == "gateway" or (mode == "auto" and owned)
