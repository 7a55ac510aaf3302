"""Webhooks: tenants' endpoints, the outbox that turns job events into deliveries, and the sender.

Job state changes are rows in ``job_events`` (written by the job paths, which know nothing of
webhooks). ``fan_out`` tails that table by its id from a cursor row and, in the transaction that
moves the cursor, inserts one delivery per subscribed endpoint of the job's tenant: a crash
leaves either both or neither, so each event is fanned out once. ``claim_due`` hands due deliveries
to a sender under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), ``send`` makes one signed
try through the outbound policy's pinned transport, and ``record_try`` schedules the next retry,
or gives up, and disables an endpoint that keeps failing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from nexa import webhooks as signing
from nexa.contracts.webhooks import (
    DeliveryStatus,
    WebhookCreate,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookEventType,
    WebhookStatus,
)
from nexa.ids import new_id
from nexa_gateway.db import Job, JobEvent, PipelineEventRow, PipelineRow, utcnow
from nexa_gateway.db import WebhookCursor as CursorRow
from nexa_gateway.db import WebhookDelivery as DeliveryRow
from nexa_gateway.db import WebhookEndpoint as EndpointRow
from nexa_gateway.errors import ApiError, not_found
from nexa_gateway.settings import Settings
from nexa_store.access import AccessDenied
from nexa_store.outbound import ENV_ALLOWLIST, ENV_ONLY_ALLOWLIST, OutboundPolicy, check_url
from nexa_store.outbound_transport import policy_transport

log = logging.getLogger("nexa.gateway.webhooks")

CURSOR = "job_events"
PIPELINE_CURSOR = "pipeline_events"
BATCH = 500
SEND_BATCH = 32
MAX_RESULT_BYTES = 16_000
# Seconds between tries: the last try is 24 h after the first (5+30+…+28800+29845 = 86400).
RETRY_DELAYS: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 29845)

# job_events kinds → the event type a webhook carries and the job status it means.
EVENT_TYPES: dict[str, tuple[WebhookEventType, str]] = {
    "created": (WebhookEventType.job_created, "pending"),
    "claimed": (WebhookEventType.job_running, "running"),
    "requeued": (WebhookEventType.job_retrying, "pending"),
    "completed": (WebhookEventType.job_completed, "completed"),
    "failed": (WebhookEventType.job_failed, "failed"),
    "cancelled": (WebhookEventType.job_cancelled, "cancelled"),
}

# pipeline_events kinds → the event type a webhook carries (the others stay in the pipeline's timeline).
PIPELINE_EVENT_TYPES: dict[str, WebhookEventType] = {
    "step.completed": WebhookEventType.pipeline_step_completed,
    "step.cached": WebhookEventType.pipeline_step_completed,
    "step.failed": WebhookEventType.pipeline_step_failed,
    "step.waiting_approval": WebhookEventType.pipeline_waiting_approval,
    "completed": WebhookEventType.pipeline_completed,
    "failed": WebhookEventType.pipeline_failed,
    "cancelled": WebhookEventType.pipeline_cancelled,
}


# ---------------------------------------------------------------- pure parts


def event_type_of(kind: str) -> tuple[WebhookEventType, str] | None:
    """The webhook event type (and job status) of a job event kind; ``None`` for kinds not sent."""
    return EVENT_TYPES.get(kind)


def subscribed(events: Sequence[str], event_type: str) -> bool:
    if event_type == WebhookEventType.webhook_test:
        return True
    return WebhookEventType.all.value in events or event_type in events


def retry_delay(retry_index: int, scale: float = 1.0) -> float | None:
    """Seconds before the retry after try number ``retry_index`` (0: the first try); ``None``: give up."""
    if retry_index >= len(RETRY_DELAYS):
        return None
    return RETRY_DELAYS[retry_index] * scale


def policy_of(settings: Settings) -> OutboundPolicy:
    """The outbound policy webhooks obey: public addresses plus ``webhook_allowlist``."""
    env = {
        ENV_ALLOWLIST: settings.webhook_allowlist,
        ENV_ONLY_ALLOWLIST: "1" if settings.webhook_only_allowlist else "",
    }
    return OutboundPolicy.from_env(env)


def check_webhook_url(url: str, policy: OutboundPolicy) -> str:
    """``url`` if webhooks may go there; a 422 ``url_not_allowed`` naming the setting otherwise."""
    try:
        return check_url(url, policy=policy)
    except AccessDenied as exc:
        message = exc.message.replace(ENV_ALLOWLIST, "NEXA_WEBHOOK_ALLOWLIST")
        raise ApiError(422, "url_not_allowed", message) from None


def payload(event_type: str, at: datetime, data: dict[str, Any]) -> str:
    """The JSON body of a delivery (compact, keys sorted: the bytes that are signed and stored)."""
    body = {"type": event_type, "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def job_data(job: Job, status: str, attempt: int) -> dict[str, Any]:
    """What a job event tells the tenant: its own job's id, type, status, error and (small) result."""
    data: dict[str, Any] = {
        "job_id": job.id,
        "job_type": job.job_type,
        "status": status,
        "attempt": attempt,
        "labels": dict(job.labels or {}),
    }
    if status == "failed" and job.error_code:
        data["error"] = {"code": job.error_code, "message": (job.error_message or "")[:2000]}
    if status == "completed" and job.result is not None:
        if len(json.dumps(job.result, default=str)) <= MAX_RESULT_BYTES:
            data["result"] = job.result
        else:
            data["result_truncated"] = True  # fetch it with GET /v1/jobs/{id}
    return data


# ---------------------------------------------------------------- endpoints


def _endpoint(row: EndpointRow) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        url=row.url,
        events=list(row.events),
        description=row.description,
        status=WebhookStatus.enabled if row.enabled else WebhookStatus.disabled,
        disabled_reason=None if row.enabled else (row.disabled_reason or "disabled"),
        consecutive_failures=row.consecutive_failures,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def delivery_contract(row: DeliveryRow, *, with_payload: bool = False) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_type=row.event_type,
        job_id=row.job_id,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=(row.last_error or None) and (row.last_error or "")[:1000],
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        payload=json.loads(row.body) if with_payload else None,
    )


def create(
    session: Session, settings: Settings, tenant_id: str, body: WebhookCreate
) -> WebhookEndpointCreated:
    check_webhook_url(body.url, policy_of(settings))
    now = utcnow()
    row = EndpointRow(
        id=new_id("wh"),
        tenant_id=tenant_id,
        url=body.url,
        events=sorted({e.value for e in body.events}),
        description=body.description,
        secret=signing.new_secret(),
        enabled=True,
        consecutive_failures=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return WebhookEndpointCreated(**_endpoint(row).model_dump(), secret=row.secret)


def get_row(session: Session, tenant_id: str, endpoint_id: str) -> EndpointRow:
    """The tenant's endpoint; another tenant's id is the same 404 as an unknown one."""
    row = session.get(EndpointRow, endpoint_id)
    if row is None or row.tenant_id != tenant_id:
        raise not_found("webhook", endpoint_id)
    return row


def get(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    return _endpoint(get_row(session, tenant_id, endpoint_id))


def list_endpoints(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    rows = session.scalars(
        select(EndpointRow).where(EndpointRow.tenant_id == tenant_id).order_by(EndpointRow.created_at)
    )
    return [_endpoint(r) for r in rows]


def remove(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    row = get_row(session, tenant_id, endpoint_id)
    gone = _endpoint(row)
    session.execute(delete(DeliveryRow).where(DeliveryRow.endpoint_id == endpoint_id))
    session.delete(row)
    session.flush()
    return gone


def enable(session: Session, settings: Settings, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """Turn an endpoint back on (after it was disabled for failing); its failure streak starts again."""
    row = get_row(session, tenant_id, endpoint_id)
    check_webhook_url(row.url, policy_of(settings))  # the operator's policy may have changed since
    row.enabled, row.disabled_reason = True, None
    row.consecutive_failures, row.failing_since = 0, None
    row.updated_at = utcnow()
    session.flush()
    return _endpoint(row)


def deliveries(
    session: Session, tenant_id: str, endpoint_id: str, *, status: str | None, limit: int
) -> list[WebhookDelivery]:
    get_row(session, tenant_id, endpoint_id)
    query = select(DeliveryRow).where(DeliveryRow.endpoint_id == endpoint_id)
    if status:
        query = query.where(DeliveryRow.status == status)
    rows = session.scalars(query.order_by(DeliveryRow.created_at.desc(), DeliveryRow.id).limit(limit))
    return [delivery_contract(r) for r in rows]


def get_delivery(session: Session, tenant_id: str, endpoint_id: str, delivery_id: str) -> DeliveryRow:
    get_row(session, tenant_id, endpoint_id)
    row = session.get(DeliveryRow, delivery_id)
    if row is None or row.endpoint_id != endpoint_id:
        raise not_found("webhook delivery", delivery_id)
    return row


def redeliver(session: Session, tenant_id: str, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, with the same ``webhook-id`` and body (a receiver can spot the repeat)."""
    endpoint = get_row(session, tenant_id, endpoint_id)
    if not endpoint.enabled:
        raise ApiError(409, "webhook_disabled", f"webhook {endpoint_id} is disabled; enable it first")
    row = get_delivery(session, tenant_id, endpoint_id, delivery_id)
    row.status, row.retry_index, row.next_attempt_at = "pending", 0, utcnow()
    session.flush()
    return delivery_contract(row)


def send_test(session: Session, tenant_id: str, endpoint_id: str) -> WebhookDelivery:
    """Queue a ``webhook.test`` event for one endpoint."""
    endpoint = get_row(session, tenant_id, endpoint_id)
    if not endpoint.enabled:
        raise ApiError(409, "webhook_disabled", f"webhook {endpoint_id} is disabled; enable it first")
    now = utcnow()
    row = DeliveryRow(
        id=new_id("msg"),
        endpoint_id=endpoint.id,
        tenant_id=tenant_id,
        event_type=WebhookEventType.webhook_test.value,
        body=payload(WebhookEventType.webhook_test.value, now, {"endpoint_id": endpoint.id}),
        status="pending",
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return delivery_contract(row)


# ---------------------------------------------------------------- the outbox


def has_new_events(session: Session) -> bool:
    """A cheap read: is there anything past the cursor (or no cursor yet)?"""
    last = session.scalar(select(CursorRow.last_event_id).where(CursorRow.name == CURSOR))
    newest = session.scalar(select(func.max(JobEvent.id)))
    return last is None or (newest or 0) > last


def fan_out(session: Session, *, settle_seconds: float, lock: bool, batch: int = BATCH) -> int:
    """Turn job events past the cursor into deliveries and move the cursor, in this one transaction.

    Ids are handed out before commit, so on PostgreSQL a lower id can become visible after a higher
    one: at a gap the walk stops until the row after it is ``settle_seconds`` old. The first run
    starts at the newest event (history is not replayed). Returns how many events were read.
    """
    cursor = session.get(CursorRow, CURSOR, with_for_update=lock)
    if cursor is None:
        newest = session.scalar(select(func.max(JobEvent.id))) or 0
        session.add(CursorRow(name=CURSOR, last_event_id=newest))
        session.flush()
        return 0
    if not session.scalar(select(exists().where(EndpointRow.enabled.is_(True)))):
        # No endpoint anywhere: nothing to deliver (an endpoint never gets events from before it
        # existed), so skip to the newest event without reading any.
        cursor.last_event_id = max(cursor.last_event_id, session.scalar(select(func.max(JobEvent.id))) or 0)
        session.flush()
        return 0
    rows = session.execute(
        select(JobEvent.id, JobEvent.job_id, JobEvent.kind, JobEvent.at, JobEvent.attempt)
        .where(JobEvent.id > cursor.last_event_id)
        .order_by(JobEvent.id)
        .limit(batch)
    ).all()
    now = utcnow()
    taken = _settled(rows, cursor.last_event_id, now, settle_seconds)
    if not taken:
        return 0
    wanted = [r for r in taken if event_type_of(r.kind) is not None]
    if wanted:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_({r.job_id for r in wanted})))}
        tenants = {j.tenant_id for j in jobs.values()}
        endpoints: dict[str, list[EndpointRow]] = {}
        for endpoint in session.scalars(
            select(EndpointRow).where(EndpointRow.enabled.is_(True), EndpointRow.tenant_id.in_(tenants))
        ):
            endpoints.setdefault(endpoint.tenant_id, []).append(endpoint)
        for event in wanted:
            job = jobs.get(event.job_id)
            mapped = event_type_of(event.kind)
            if job is None or mapped is None:
                continue
            event_type, status = mapped
            _deliver(
                session,
                endpoints.get(job.tenant_id, []),
                event_type.value,
                event.at,
                job.id,
                lambda: job_data(job, status, event.attempt),  # noqa: B023 (called within this pass)
                now,
            )
    cursor.last_event_id = taken[-1].id
    session.flush()
    return len(taken)


def _deliver(
    session: Session,
    endpoints: Sequence[EndpointRow],
    event_type: str,
    at: datetime,
    job_id: str | None,
    data: Callable[[], dict[str, Any]],
    now: datetime,
) -> None:
    """One pending delivery per endpoint subscribed to ``event_type`` that existed at ``at``; the body
    is built once, only when some endpoint wants it."""
    body: str | None = None
    for endpoint in endpoints:
        if endpoint.created_at > at or not subscribed(endpoint.events, event_type):
            continue
        body = body or payload(event_type, at, data())
        session.add(
            DeliveryRow(
                id=new_id("msg"),
                endpoint_id=endpoint.id,
                tenant_id=endpoint.tenant_id,
                event_type=event_type,
                job_id=job_id,
                body=body,
                status="pending",
                next_attempt_at=now,
                created_at=now,
            )
        )


def _settled(rows: Sequence[Any], last: int, now: datetime, settle_seconds: float) -> list[Any]:
    """The rows (ordered by id) that can be read past ``last``: up to the first gap younger than
    ``settle_seconds`` (a lower id may still commit there)."""
    taken = []
    expected = last + 1
    for row in rows:
        if row.id != expected and now - row.at < timedelta(seconds=settle_seconds):
            break
        taken.append(row)
        expected = row.id + 1
    return taken


def has_new_pipeline_events(session: Session) -> bool:
    last = session.scalar(select(CursorRow.last_event_id).where(CursorRow.name == PIPELINE_CURSOR))
    newest = session.scalar(select(func.max(PipelineEventRow.id)))
    return last is None or (newest or 0) > last


def fan_out_pipelines(session: Session, *, settle_seconds: float, lock: bool, batch: int = BATCH) -> int:
    """As ``fan_out``, for pipeline events: the ones in ``PIPELINE_EVENT_TYPES`` become deliveries."""
    cursor = session.get(CursorRow, PIPELINE_CURSOR, with_for_update=lock)
    newest = session.scalar(select(func.max(PipelineEventRow.id))) or 0
    if cursor is None:
        session.add(CursorRow(name=PIPELINE_CURSOR, last_event_id=newest))
        session.flush()
        return 0
    if not session.scalar(select(exists().where(EndpointRow.enabled.is_(True)))):
        cursor.last_event_id = max(cursor.last_event_id, newest)
        session.flush()
        return 0
    rows = (
        session.execute(
            select(PipelineEventRow)
            .where(PipelineEventRow.id > cursor.last_event_id)
            .order_by(PipelineEventRow.id)
            .limit(batch)
        )
        .scalars()
        .all()
    )
    now = utcnow()
    taken = _settled(rows, cursor.last_event_id, now, settle_seconds)
    if not taken:
        return 0
    wanted = [r for r in taken if r.kind in PIPELINE_EVENT_TYPES]
    if wanted:
        pipelines = {
            p.id: p
            for p in session.scalars(
                select(PipelineRow).where(PipelineRow.id.in_({r.pipeline_id for r in wanted}))
            )
        }
        endpoints: dict[str, list[EndpointRow]] = {}
        for endpoint in session.scalars(
            select(EndpointRow).where(
                EndpointRow.enabled.is_(True),
                EndpointRow.tenant_id.in_({p.tenant_id for p in pipelines.values()}),
            )
        ):
            endpoints.setdefault(endpoint.tenant_id, []).append(endpoint)
        for event in wanted:
            pipeline = pipelines.get(event.pipeline_id)
            if pipeline is None:
                continue
            _deliver(
                session,
                endpoints.get(pipeline.tenant_id, []),
                PIPELINE_EVENT_TYPES[event.kind].value,
                event.at,
                event.job_id,
                lambda: pipeline_data(pipeline, event),  # noqa: B023 (called within this pass)
                now,
            )
    cursor.last_event_id = taken[-1].id
    session.flush()
    return len(taken)


def pipeline_data(pipeline: PipelineRow, event: PipelineEventRow) -> dict[str, Any]:
    """A pipeline event's ``data``: the pipeline, the step and job it is about, what happened."""
    return {
        "pipeline_id": pipeline.id,
        "name": pipeline.name,
        "event_id": f"{pipeline.id}:{event.seq}",
        "step": event.step,
        "job_id": event.job_id,
        "message": event.message,
        "labels": dict(pipeline.labels or {}),
    }


# ---------------------------------------------------------------- the sender


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    attempt: int
    endpoint_id: str
    url: str
    secret: str
    body: str


@dataclass(frozen=True)
class TryResult:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def has_due(session: Session) -> bool:
    return (
        session.scalar(
            select(DeliveryRow.id)
            .where(DeliveryRow.status == "pending", DeliveryRow.next_attempt_at <= utcnow())
            .limit(1)
        )
        is not None
    )


def claim_due(
    session: Session, *, lease_seconds: float, skip_locked: bool, limit: int = SEND_BATCH
) -> list[Claimed]:
    """Take due deliveries for one send each: their next try moves past the lease, so no other sender
    (this replica's next tick or another replica) takes them meanwhile."""
    now = utcnow()
    query = (
        select(DeliveryRow)
        .where(DeliveryRow.status == "pending", DeliveryRow.next_attempt_at <= now)
        .order_by(DeliveryRow.next_attempt_at)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    if not rows:
        return []
    endpoints = {
        e.id: e
        for e in session.scalars(select(EndpointRow).where(EndpointRow.id.in_({r.endpoint_id for r in rows})))
    }
    claimed = []
    for row in rows:
        endpoint = endpoints.get(row.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            row.status, row.next_attempt_at = "failed", None
            row.last_error = (
                f"the endpoint is disabled: {endpoint.disabled_reason if endpoint else 'deleted'}"[:1000]
            )
            continue
        row.attempts += 1
        row.next_attempt_at = now + timedelta(seconds=lease_seconds)
        claimed.append(Claimed(row.id, row.attempts, endpoint.id, endpoint.url, endpoint.secret, row.body))
    session.flush()
    return claimed


def send(client: httpx.Client, claimed: Claimed) -> TryResult:
    """One signed try; redirects are not followed (a 3xx is a failure)."""
    body = claimed.body.encode()
    try:
        response = client.post(
            claimed.url, content=body, headers=signing.headers(claimed.secret, claimed.delivery_id, body)
        )
    except httpx.HTTPError as exc:
        return TryResult(None, f"{type(exc).__name__}: {exc}"[:1000])
    if 200 <= response.status_code < 300:
        return TryResult(response.status_code, None)
    return TryResult(response.status_code, f"HTTP {response.status_code}")


def record_try(session: Session, settings: Settings, claimed: Claimed, result: TryResult) -> None:
    """Write a try's outcome: delivered, or the next retry (or failed when the schedule is over);
    the endpoint's failure streak, which disables it once long enough in tries and in time."""
    row = session.get(DeliveryRow, claimed.delivery_id)
    endpoint = session.get(EndpointRow, claimed.endpoint_id)
    if row is None or endpoint is None or row.status != "pending" or row.attempts != claimed.attempt:
        return  # deleted, or redelivered and sent again meanwhile: that try writes its own outcome
    now = utcnow()
    row.last_status_code, row.last_error = result.status_code, result.error
    if result.ok:
        row.status, row.delivered_at, row.next_attempt_at = "delivered", now, None
        if endpoint.consecutive_failures:
            endpoint.consecutive_failures, endpoint.failing_since = 0, None
        session.flush()
        return
    delay = retry_delay(row.retry_index, settings.webhook_retry_scale)
    if delay is None:
        row.status, row.next_attempt_at = "failed", None
    else:
        row.retry_index += 1
        row.next_attempt_at = now + timedelta(seconds=delay)
    endpoint.consecutive_failures += 1
    endpoint.failing_since = endpoint.failing_since or now
    streak = now - endpoint.failing_since
    if (
        endpoint.enabled
        and endpoint.consecutive_failures >= settings.webhook_disable_after_failures
        and streak >= timedelta(seconds=settings.webhook_disable_after_seconds)
    ):
        disable(
            session,
            endpoint,
            f"{endpoint.consecutive_failures} consecutive failed deliveries "
            f"since {endpoint.failing_since.isoformat(timespec='seconds')}; last: {result.error}",
        )
    session.flush()


def disable(session: Session, endpoint: EndpointRow, reason: str) -> None:
    """Turn an endpoint off; what was still waiting for it fails with the reason."""
    endpoint.enabled, endpoint.disabled_reason, endpoint.updated_at = False, reason[:1000], utcnow()
    session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.endpoint_id == endpoint.id, DeliveryRow.status == "pending")
        .values(
            status="failed", next_attempt_at=None, last_error=f"the endpoint was disabled: {reason}"[:1000]
        )
    )
    log.warning("webhook %s disabled: %s", endpoint.id, reason)


def make_client(settings: Settings) -> httpx.Client:
    """The sender's HTTP client: connections only to addresses the webhook policy allows."""
    return httpx.Client(
        transport=policy_transport(policy_of(settings)),
        timeout=settings.webhook_timeout_seconds,
        follow_redirects=False,
        headers={"user-agent": "nexa-webhooks/1"},
    )
