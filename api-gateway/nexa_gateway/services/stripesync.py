"""Usage to Stripe as Billing meter events, and Stripe's webhook events back, each exactly once.

The local usage table is the ledger and the source of truth; Stripe gets a copy.

* **Out.** Usage rows are sent in id order from a cursor (``stripe_sync``). Each meter
  event's ``identifier`` is ``nexa-usage-<row id>``, so a row sent twice (the process
  was killed between Stripe's answer and the cursor's commit) is one event to Stripe,
  which deduplicates on the identifier. The cursor moves one row at a time, after the
  call. A transient failure (network, 429, 5xx) stops the tick, and the next tick
  retries from the cursor. A request Stripe refuses for good (400) is logged and
  skipped, so one bad row never blocks the rest.
* **In.** ``apply_event`` records each event id once (``stripe_events``). Invoice events
  set the tenant's payment status, and only an event newer than the one that set it
  counts, so replays and out-of-order deliveries end where the newest event says.

Meter values must be whole numbers: hours are sent as seconds, GB-months as MB-months.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa_gateway.db import StripeCursor, StripeCustomer, StripeEvent, Tenant, TenantPayment, Usage
from nexa_gateway.settings import Settings

log = logging.getLogger("nexa.gateway.stripe")

CURSOR = "meter_events"
BATCH = 500
# Usage kind → (meter event name, factor to whole units).
METERS: dict[str, tuple[str, int]] = {
    "rows": ("nexa_rows", 1),
    "prompt_tokens": ("nexa_prompt_tokens", 1),
    "completion_tokens": ("nexa_completion_tokens", 1),
    "samples": ("nexa_samples", 1),
    "deployments": ("nexa_deployments", 1),
    "gpu_hours": ("nexa_gpu_seconds", 3600),
    "cpu_hours": ("nexa_cpu_seconds", 3600),
    "deployment_hours": ("nexa_deployment_seconds", 3600),
    "storage_gb_months": ("nexa_storage_mb_months", 1000),
}
PAID = frozenset({"invoice.paid", "invoice.payment_succeeded"})
FAILED = frozenset({"invoice.payment_failed"})
# Test hook: kill this process after N meter-event calls, before the cursor commits (the crash the
# exactly-once design is for). Read only by the `python -m nexa_gateway.services.stripesync` entry.
KILL_HOOK = "NEXA_TEST_STRIPE_KILL_AFTER_CALLS"


def make_client(settings: Settings) -> Any | None:
    """A Stripe client for the configured key and API root; None when Stripe is off."""
    if not settings.stripe_api_key:
        return None
    import stripe

    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    return stripe.StripeClient(settings.stripe_api_key, base_addresses=base, max_network_retries=2)  # type: ignore[arg-type]


def meter_event(kind: str, amount: float) -> tuple[str, int]:
    """The meter event name and whole-number value for ``amount`` of ``kind``."""
    name, factor = METERS.get(kind, (f"nexa_{kind}", 1))
    value = (Decimal(str(amount)) * factor).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return name, int(value)


def _customer(session: Session, client: Any, tenant_id: str) -> str:
    row = session.get(StripeCustomer, tenant_id)
    if row is not None:
        return row.customer_id
    tenant = session.get(Tenant, tenant_id)
    customer = client.v1.customers.create(
        params={"name": tenant.name if tenant else tenant_id, "metadata": {"nexa_tenant_id": tenant_id}},
        # One customer per tenant even when two syncs race or a crash repeats the call.
        options={"idempotency_key": f"nexa-customer-{tenant_id}"},
    )
    session.add(StripeCustomer(tenant_id=tenant_id, customer_id=str(customer.id)))
    session.commit()
    return str(customer.id)


def sync_meter_events(
    session: Session, client: Any, *, limit: int = BATCH, after_call: Callable[[int], None] | None = None
) -> int:
    """Send the usage recorded since the cursor; the number of rows the cursor moved past."""
    import stripe

    cursor = session.get(StripeCursor, CURSOR)
    if cursor is None:
        cursor = StripeCursor(name=CURSOR, last_usage_id=0)
        session.add(cursor)
        session.commit()
    rows = session.scalars(
        select(Usage).where(Usage.id > cursor.last_usage_id).order_by(Usage.id).limit(limit)
    ).all()
    moved = 0
    for usage in rows:
        name, value = meter_event(usage.kind, usage.amount)
        if value > 0:
            try:
                client.v1.billing.meter_events.create(
                    params={
                        "event_name": name,
                        "identifier": f"nexa-usage-{usage.id}",
                        "timestamp": int(usage.created_at.timestamp()),
                        "payload": {
                            "stripe_customer_id": _customer(session, client, usage.tenant_id),
                            "value": str(value),
                        },
                    }
                )
            except stripe.InvalidRequestError as exc:
                log.error("usage %s not sent to Stripe (refused for good): %s", usage.id, exc)
            except stripe.StripeError as exc:
                log.warning(
                    "Stripe unavailable at usage %s; the next sync retries from there: %s", usage.id, exc
                )
                break
            if after_call is not None:
                after_call(usage.id)
        cursor.last_usage_id = usage.id
        session.commit()
        moved += 1
    return moved


def apply_event(session: Session, event: dict[str, Any]) -> bool:
    """Apply one verified webhook event; False when it was applied before (a replay)."""
    event_id, kind, created = str(event["id"]), str(event.get("type", "")), int(event.get("created") or 0)
    try:
        with session.begin_nested():
            session.add(StripeEvent(id=event_id, type=kind[:100], created=created))
            session.flush()
    except IntegrityError:
        return False
    if kind in PAID or kind in FAILED:
        invoice = (event.get("data") or {}).get("object") or {}
        customer = invoice.get("customer")
        tenant_id = session.scalar(
            select(StripeCustomer.tenant_id).where(StripeCustomer.customer_id == customer)
        )
        if tenant_id is None:
            log.warning("Stripe event %s names customer %s, who is no tenant here", event_id, customer)
        else:
            _set_payment(session, tenant_id, kind, created, invoice)
    session.commit()
    return True


def _set_payment(session: Session, tenant_id: str, kind: str, created: int, invoice: dict[str, Any]) -> None:
    status = "active" if kind in PAID else "payment_failed"
    reason = "" if kind in PAID else f"invoice {invoice.get('id', '?')} payment failed"
    row = session.get(TenantPayment, tenant_id)
    if row is None:
        session.add(TenantPayment(tenant_id=tenant_id, status=status, reason=reason, as_of=created))
    elif created >= row.as_of:  # an older event arriving late never overrides a newer one
        row.status, row.reason, row.as_of = status, reason, created
    session.flush()


def payment_failure(session: Session, tenant_id: str) -> str | None:
    """Why the tenant may not submit paid jobs (its last invoice's payment failed); None when it may."""
    row = session.get(TenantPayment, tenant_id)
    return (
        row.reason or "the last invoice's payment failed"
        if row is not None and row.status != "active"
        else None
    )


def main() -> None:
    """``python -m nexa_gateway.services.stripesync``: one sync pass with the gateway's settings."""
    from nexa_gateway.db import Database

    settings = Settings()
    client = make_client(settings)
    if client is None:
        raise SystemExit("NEXA_STRIPE_API_KEY is not set")
    kill_after = int(os.environ.get(KILL_HOOK) or 0)
    calls = 0

    def after_call(_usage_id: int) -> None:
        nonlocal calls
        calls += 1
        if kill_after and calls >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    db = Database(settings.database_url)
    db.create_schema()
    with db.session() as session:
        print(sync_meter_events(session, client, after_call=after_call))


if __name__ == "__main__":
    main()
