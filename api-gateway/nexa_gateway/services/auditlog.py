"""The audit log: a row for every state-changing action a key or a node takes through the API.

A pure ASGI middleware notes each authenticated POST/PUT/PATCH/DELETE of the action routes (keys,
jobs, pipelines, datasets and artifacts, deployments, node tokens and nodes, webhooks, grants and
budgets, billing) once it is answered — refusals included — with who (the key or worker), what (the
route and the id it acted on), when and from where. It only queues the entry: a background task
writes the queue every ``audit_flush_seconds`` in one transaction, so the action's own latency does
not carry a write; the gateway flushes what is queued when it stops.

High-volume machine traffic is not an action: workers' heartbeats, claims, progress, log lines and
reports, store uploads and benchmark rounds, estimates, and inference calls are left out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexa.contracts.auditlog import AuditEntry, AuditLogPage
from nexa_gateway.db import AuditRow, Database, utcnow

log = logging.getLogger("nexa.gateway.audit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Route templates (after the method) that are traffic, not actions.
NOT_ACTIONS = (
    "/v1/workers/heartbeat",
    "/v1/workers/claim",
    "/v1/workers/jobs/",
    "/v1/worker-store/",
    "/v1/store/",
    "/v1/chat/",
    "/v1/completions",
    "/v2/",
    "/console/",
)
MAX_QUEUE = 50_000


def is_action(method: str, template: str) -> bool:
    if method not in WRITE_METHODS:
        return False
    if template.endswith("/estimate") or "/benchmark" in template:
        return False
    return not any(template.startswith(prefix) for prefix in NOT_ACTIONS)


def _target(path_params: Mapping[str, Any], location: str | None) -> str | None:
    """The id the action was on (the route's first id parameter) or made (its Location header)."""
    for name, value in path_params.items():
        if name.endswith("_id") or name in ("tenant", "step"):
            return str(value)[:200]
    if location:
        return location.rstrip("/").rsplit("/", 1)[-1][:200]
    return None


class AuditQueue:
    """Entries noted by the middleware, waiting for the next flush (thread-safe)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.dropped = 0

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            if len(self._rows) >= MAX_QUEUE:
                self.dropped += 1  # the database has been down a long while; say so in the log
                return
            self._rows.append(row)

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def put_back(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows = rows + self._rows

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


def flush(db: Database, queue: AuditQueue) -> int:
    """Write what is queued in one transaction (put back if the database refuses); how many."""
    rows = queue.take()
    if not rows:
        return 0
    try:
        with db.session() as session:
            session.execute(insert(AuditRow), rows)
            session.commit()
    except Exception:
        queue.put_back(rows)
        raise
    if queue.dropped:
        log.error("audit log: %d entries were dropped while the database could not be written", queue.dropped)
        queue.dropped = 0
    return len(rows)


class AuditMiddleware:
    """Notes every answered action of an authenticated caller (see the module docstring)."""

    def __init__(self, app: ASGIApp, queue: AuditQueue) -> None:
        self.app = app
        self.queue = queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        status = 500
        location: str | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name == b"location":
                        location = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._note(scope, status, location)

    def _note(self, scope: Scope, status: int, location: str | None) -> None:
        template = getattr(scope.get("route"), "path", None)
        method = str(scope.get("method"))
        if template is None or not is_action(method, template):
            return
        state = scope.get("state") or {}
        principal = state.get("principal")
        worker = state.get("worker")
        registrar = state.get("registrar")
        if principal is not None:
            tenant, kind, actor = principal.tenant_id, "key", principal.key_id
        elif worker is not None:
            tenant, kind, actor = getattr(worker, "owner_tenant_id", None), "worker", worker.id
        elif registrar is not None:
            kind, actor, tenant = (
                registrar  # a node joining: with a tenant's node token or the platform's secret
            )
        else:
            return  # not authenticated: nothing was done, and nobody to name
        headers = dict(scope.get("headers") or [])
        client = scope.get("client")
        self.queue.add(
            {
                "at": utcnow(),
                "tenant_id": tenant,
                "actor_kind": kind,
                "actor_id": str(actor)[:64],
                "action": f"{method} {template}"[:200],
                "target": _target(scope.get("path_params") or {}, location),
                "status_code": status,
                "client_ip": (client[0] if client else None),
                "user_agent": headers.get(b"user-agent", b"").decode("latin-1")[:200] or None,
            }
        )


def entries(
    session: Session,
    tenant_id: str,
    *,
    before: int | None,
    limit: int,
    action: str | None = None,
    actor_id: str | None = None,
    since: datetime | None = None,
) -> AuditLogPage:
    """The tenant's entries, newest first."""
    query = select(AuditRow).where(AuditRow.tenant_id == tenant_id)
    if before is not None:
        query = query.where(AuditRow.id < before)
    if action:
        query = query.where(AuditRow.action == action)
    if actor_id:
        query = query.where(AuditRow.actor_id == actor_id)
    if since is not None:
        query = query.where(AuditRow.at >= since)
    rows = list(session.scalars(query.order_by(AuditRow.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        AuditEntry(
            id=r.id,
            at=r.at,
            tenant_id=r.tenant_id,
            actor_kind=r.actor_kind,
            actor_id=r.actor_id,
            action=r.action,
            target=r.target,
            status_code=r.status_code,
            client_ip=r.client_ip,
            user_agent=r.user_agent,
        )
        for r in rows
    ]
    return AuditLogPage(items=items, next_before=rows[-1].id if more and rows else None)
