"""Sign and verify Nexa webhooks (the Standard Webhooks scheme).

Every delivery carries three headers:

- ``webhook-id``: the delivery's id (``msg_…``), the same on every retry and redelivery,
  so a receiver that stores the ids it has handled can drop a repeat;
- ``webhook-timestamp``: seconds since the epoch when this try was sent;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of ``"{id}.{timestamp}.{body}"``, keyed
  by the endpoint's secret (``whsec_`` + base64 of the key bytes).

A receiver calls ``verify(headers, body, secret)`` with the raw request body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32


class WebhookVerificationError(Exception):
    """A webhook failed verification: a header is missing, the signature does not match, or the
    timestamp is outside the tolerance (a replay of an old request)."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookVerificationError("the secret is not whsec_ followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one try: ``v1,`` and the base64 HMAC-SHA256."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for sending ``body`` as delivery ``msg_id``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a received webhook and return its parsed JSON payload.

    ``headers`` may use any letter case; ``body`` must be the raw body as received.
    Raises ``WebhookVerificationError`` when a header is missing, no ``v1`` signature in
    ``webhook-signature`` (space-separated, so secrets can rotate) matches, or the timestamp
    is more than ``tolerance`` seconds from now. It does not dedupe: keep the ``webhook-id``
    values you have handled to drop a redelivery.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise WebhookVerificationError(f"webhook-timestamp {stamp[:40]!r} is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp {timestamp} is more than {tolerance:g} s from now ({int(current)})"
        )
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, msg_id, timestamp, raw).encode()
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected):
            break
    else:
        raise WebhookVerificationError("no signature in webhook-signature matches")
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise WebhookVerificationError("the body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return payload
