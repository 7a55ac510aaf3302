"""Stripe against stripe-mock (Stripe's own API emulator) on loopback, on SQLite and PostgreSQL.

stripe-mock keeps no state, so a recording proxy in front of it counts what reached "Stripe":
every test ends with the number of unique meter-event identifiers equal to the ledger's rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nexa_gateway.db import Usage
from nexa_gateway.services import stripesync
from tests.fixtures.stripe_mock import StripeMock
from tests.integration.gateway_app import Gateway, build_gateway, finish_with_usage

pytestmark = pytest.mark.integration

API_KEY = "sk_test_123"
WEBHOOK_SECRET = "whsec_nexa_test"


@pytest.fixture
def billed(db_url: str, tmp_path: Path, stripe_mock: StripeMock) -> Iterator[Gateway]:
    stripe_mock.requests.clear()
    yield from build_gateway(
        db_url,
        tmp_path / "gw",
        stripe_api_key=API_KEY,
        stripe_api_base=stripe_mock.url,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_sync_interval_seconds=0,  # the tests run the sync themselves
    )


def _complete(
    gw: Gateway, worker: dict[str, str], usage: dict[str, float], repeats: int = 1
) -> dict[str, Any]:
    job = gw.submit_audit()
    finish_with_usage(gw, job, worker, usage, repeats)  # repeats are refused: usage is recorded once
    return job


def _ledger(gw: Gateway) -> int:
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Usage)) or 0)


def _sync(gw: Gateway) -> int:
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        return stripesync.sync_meter_events(session, stripesync.make_client(state.settings))


def test_usage_reaches_stripe_once_however_often_it_is_reported_or_synced(
    billed: Gateway,
    stripe_mock: StripeMock,
) -> None:
    worker = billed.register_worker()
    for _ in range(3):
        _complete(billed, worker, {"rows": 1500}, repeats=100)
    _complete(billed, worker, {"rows": 10, "cpu_hours": 0.25})
    assert _ledger(billed) == 5
    assert _sync(billed) == 5 and _sync(billed) == 0 and _sync(billed) == 0
    events = stripe_mock.meter_events()
    identifiers = [e["identifier"] for e in events]
    assert len(identifiers) == len(set(identifiers)) == _ledger(billed)
    by_name = sorted((e["event_name"], e["payload[value]"]) for e in events)
    assert by_name == [
        ("nexa_cpu_seconds", "900"),
        *[("nexa_rows", v) for v in ("10", "1500", "1500", "1500")],
    ]
    assert {e["payload[stripe_customer_id]"] for e in events} == {events[0]["payload[stripe_customer_id]"]}
    creates = [r for r in stripe_mock.requests if r[:2] == ("POST", "/v1/customers")]
    assert [r[3] for r in creates] == [200]  # one Stripe customer for the tenant, accepted


def test_a_sync_killed_between_stripe_and_its_commit_resends_only_that_event(
    billed: Gateway,
    stripe_mock: StripeMock,
    db_url: str,
    tmp_path: Path,
) -> None:
    worker = billed.register_worker()
    for rows in (1, 2, 3, 4):
        _complete(billed, worker, {"rows": rows})
    env = {
        **os.environ,
        "NEXA_HOME": str(tmp_path / "home"),
        "NEXA_DATABASE_URL": db_url,
        "NEXA_STRIPE_API_KEY": API_KEY,
        "NEXA_STRIPE_API_BASE": stripe_mock.url,
    }
    command = [sys.executable, "-m", "nexa_gateway.services.stripesync"]
    killed = subprocess.run(command, env={**env, stripesync.KILL_HOOK: "2"}, capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr  # SIGKILL after Stripe took event 2, before the commit
    assert len(stripe_mock.meter_events()) == 2
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "3"  # from event 2 again: the cursor had not moved past it
    identifiers = [e["identifier"] for e in stripe_mock.meter_events()]
    assert len(identifiers) == 5  # event 2 went twice ...
    assert (
        len(set(identifiers)) == _ledger(billed) == 4
    )  # ... under one identifier, which Stripe deduplicates


def _signed(
    event: dict[str, Any], *, at: int | None = None, secret: str = WEBHOOK_SECRET
) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    stamp = at if at is not None else int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={stamp},v1={digest}"


def _invoice_event(event_id: str, kind: str, created: int, customer: str, invoice: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": created,
        "data": {"object": {"id": invoice, "object": "invoice", "customer": customer}},
    }


def test_webhooks_apply_once_in_event_order_and_a_failed_payment_stops_new_jobs(
    billed: Gateway,
    stripe_mock: StripeMock,
) -> None:
    worker = billed.register_worker()
    _complete(billed, worker, {"rows": 100})
    _sync(billed)  # the tenant now has a Stripe customer
    customer = stripe_mock.meter_events()[0]["payload[stripe_customer_id]"]
    t = int(time.time())
    failed = _invoice_event("evt_failed", "invoice.payment_failed", t - 10, customer, "in_late")
    older_paid = _invoice_event("evt_paid_old", "invoice.paid", t - 60, customer, "in_early")

    def deliver(event: dict[str, Any], **sign: Any) -> Any:
        body, signature = _signed(event, **sign)
        return billed.client.post(
            "/v1/billing/stripe/webhook", content=body, headers={"Stripe-Signature": signature}
        )

    # Five deliveries out of order, with replays: the newest event (the failure) decides.
    answers = [deliver(e).json()["applied"] for e in (failed, older_paid, failed, older_paid, failed)]
    assert answers == [True, True, False, False, False]
    refused = billed.client.post(
        "/v1/audit", json={"dataset_uri": str(billed.dataset_file())}, headers=billed.auth()
    )
    assert refused.status_code == 402 and refused.json()["error"]["type"] == "payment_failed"
    assert "in_late" in refused.json()["error"]["message"]
    # A bad signature, another secret, or a stale timestamp is refused and changes nothing.
    paid_now = _invoice_event("evt_paid_new", "invoice.paid", t, customer, "in_late")
    body, signature = _signed(paid_now)
    tampered = billed.client.post(
        "/v1/billing/stripe/webhook",
        content=body.replace(b"invoice.paid", b"invoice.paid "),
        headers={"Stripe-Signature": signature},
    )
    assert tampered.status_code == 400 and tampered.json()["error"]["type"] == "invalid_signature"
    assert deliver(paid_now, secret="whsec_someone_else").status_code == 400
    assert deliver(paid_now, at=t - 3600).status_code == 400  # older than the 300 s tolerance
    assert (
        billed.client.post(
            "/v1/audit", json={"dataset_uri": str(billed.dataset_file())}, headers=billed.auth()
        ).status_code
        == 402
    )
    # The newer payment, properly signed, lets the tenant submit again.
    assert deliver(paid_now).json() == {"applied": True}
    accepted = billed.client.post(
        "/v1/audit", json={"dataset_uri": str(billed.dataset_file())}, headers=billed.auth()
    )
    assert accepted.status_code == 201
    # Through it all, Stripe saw each usage row once.
    identifiers = [e["identifier"] for e in stripe_mock.meter_events()]
    assert len(identifiers) == len(set(identifiers)) == _ledger(billed)


def test_stripe_is_off_cleanly_without_a_key(sqlite_gateway: Gateway) -> None:
    assert stripesync.make_client(sqlite_gateway.client.app.state.nexa.settings) is None  # type: ignore[attr-defined]
    body, signature = _signed(_invoice_event("evt_x", "invoice.paid", 1, "cus_x", "in_x"))
    off = sqlite_gateway.client.post(
        "/v1/billing/stripe/webhook", content=body, headers={"Stripe-Signature": signature}
    )
    assert off.status_code == 404
    bill = sqlite_gateway.client.get("/v1/billing/summary", headers=sqlite_gateway.auth())
    assert bill.status_code == 200  # metering, prices and the summary work without Stripe
