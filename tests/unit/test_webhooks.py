"""The pure parts of webhooks: signatures, the retry schedule, event mapping, the URL guard."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import httpcore
import pytest

from nexa import webhooks
from nexa.contracts.webhooks import WebhookCreate
from nexa_gateway.errors import ApiError
from nexa_gateway.services import webhooks as svc
from nexa_gateway.settings import Settings
from nexa_store.outbound_transport import vetted_addresses

# The Standard Webhooks specification's own example.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_matches_the_standard_webhooks_example() -> None:
    assert webhooks.sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    headers = {"Webhook-Id": SPEC_ID, "Webhook-Timestamp": str(SPEC_TS), "Webhook-Signature": SPEC_SIG}
    assert webhooks.verify(headers, SPEC_BODY, SPEC_SECRET, now=SPEC_TS + 10) == {"test": 2432232314}


def test_a_new_secret_is_whsec_and_base64_of_32_bytes() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert webhooks.new_secret() != secret


def _signed(body: bytes = b'{"type":"job.completed"}', ts: int = 1_700_000_000) -> tuple[dict[str, str], str]:
    secret = webhooks.new_secret()
    return webhooks.headers(secret, "msg_x", body, timestamp=ts), secret


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda h, b: (h, b + b" "), "no signature"),
        (lambda h, b: ({**h, "webhook-id": "msg_y"}, b), "no signature"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b), "no signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "not an integer"),
    ],
)
def test_a_changed_delivery_fails_verification(change: Any, why: str) -> None:
    headers, secret = _signed()
    changed_headers, changed_body = change(headers, b'{"type":"job.completed"}')
    with pytest.raises(webhooks.WebhookVerificationError, match=why):
        webhooks.verify(changed_headers, changed_body, secret, now=1_700_000_000)


def test_a_stale_timestamp_is_refused_and_rotated_signatures_are_accepted() -> None:
    headers, secret = _signed()
    with pytest.raises(webhooks.WebhookVerificationError, match="from now"):
        webhooks.verify(headers, b'{"type":"job.completed"}', secret, now=1_700_000_000 + 301)
    both = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    assert (
        webhooks.verify(both, b'{"type":"job.completed"}', secret, now=1_700_000_000)["type"]
        == "job.completed"
    )
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(headers, b'{"type":"job.completed"}', webhooks.new_secret(), now=1_700_000_000)


def test_the_retry_schedule_ends_a_day_after_the_first_try() -> None:
    delays = []
    i = 0
    while (delay := svc.retry_delay(i)) is not None:
        delays.append(delay)
        i += 1
    assert delays[:4] == [5, 30, 120, 600]
    assert delays == sorted(delays[:-1]) + [delays[-1]]  # growing, the last one fills the day
    assert sum(delays) == 86400
    assert svc.retry_delay(0, scale=0.01) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("kind", "event_type", "status"),
    [
        ("created", "job.created", "pending"),
        ("claimed", "job.running", "running"),
        ("requeued", "job.retrying", "pending"),
        ("completed", "job.completed", "completed"),
        ("failed", "job.failed", "failed"),
        ("cancelled", "job.cancelled", "cancelled"),
        ("spot_check", None, None),
        ("budget_exceeded", None, None),
    ],
)
def test_job_event_kinds_map_to_webhook_events(kind: str, event_type: str | None, status: str | None) -> None:
    mapped = svc.event_type_of(kind)
    assert (mapped[0].value, mapped[1]) == (event_type, status) if mapped else event_type is None


def test_subscriptions() -> None:
    assert svc.subscribed(["*"], "job.failed")
    assert svc.subscribed(["job.failed"], "job.failed")
    assert not svc.subscribed(["job.completed"], "job.failed")
    assert svc.subscribed(["job.completed"], "webhook.test")  # a test goes to whoever asks for it


def _settings(**extra: Any) -> Settings:
    return Settings(database_url="sqlite://", **extra)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://app.localhost/x",
        "http://10.1.2.3/x",
        "http://172.16.0.1/x",
        "http://192.168.0.1/x",
        "http://100.64.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://[fe80::1]/x",
        "http://[fd00::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "file:///etc/passwd",
        "http://u:p@example.com/x",
    ],
)
def test_the_guard_refuses_non_public_urls_by_default(url: str) -> None:
    with pytest.raises(ApiError) as caught:
        svc.check_webhook_url(url, svc.policy_of(_settings()))
    assert caught.value.status_code == 422


def test_the_allowlist_lets_the_operator_allow_an_address_or_a_host() -> None:
    policy = svc.policy_of(_settings(webhook_allowlist="127.0.0.1, *.internal.example"))
    assert svc.check_webhook_url("http://127.0.0.1:8000/x", policy)
    assert svc.check_webhook_url("https://hooks.internal.example/x", policy)
    assert svc.check_webhook_url("https://hooks.example.com/x", policy)  # public names need no listing
    with pytest.raises(ApiError, match="NEXA_WEBHOOK_ALLOWLIST"):
        svc.check_webhook_url("http://10.0.0.1/x", policy)
    only = svc.policy_of(_settings(webhook_allowlist="127.0.0.1", webhook_only_allowlist=True))
    with pytest.raises(ApiError):
        svc.check_webhook_url("https://hooks.example.com/x", only)


def test_the_sender_connects_only_to_vetted_addresses() -> None:
    # At connect time (no request is sent): a refused address never gets a socket.
    default = svc.policy_of(_settings())
    for host in ("127.0.0.1", "169.254.169.254", "localhost"):
        with pytest.raises(httpcore.ConnectError, match="outbound policy"):
            vetted_addresses(default, host, 80)
    allowed = svc.policy_of(_settings(webhook_allowlist="127.0.0.0/8"))
    assert vetted_addresses(allowed, "127.0.0.1", 80) == ["127.0.0.1"]
    assert ipaddress.ip_address(vetted_addresses(allowed, "localhost", 80)[0]).is_loopback


def test_the_create_contract_is_bounded_and_knows_the_event_types() -> None:
    assert WebhookCreate(url="https://x.example/h").events == [svc.WebhookEventType.all]
    with pytest.raises(ValueError):
        WebhookCreate(url="https://x.example/h", events=["job.exploded"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        WebhookCreate(url="https://x.example/" + "a" * 2000)


def test_the_payload_is_compact_sorted_json_with_a_utc_timestamp() -> None:
    from datetime import UTC, datetime

    body = svc.payload("job.completed", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), {"job_id": "job_x"})
    assert body == '{"data":{"job_id":"job_x"},"timestamp":"2026-01-02T03:04:05Z","type":"job.completed"}'
