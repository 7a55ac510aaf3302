"""Attempt tokens: the one credential an engine pod holds, good for one attempt of one job.

In cluster mode the operator starts each attempt's pod. Instead of the platform's
storage credentials, the pod gets a token that names its job, attempt and tenant,
signed with a secret the operator and the gateway share. The gateway accepts it
on the store routes a tenant's node uses (``/v1/workers/jobs/{id}/store/…``)
while that attempt is the job's current one and the job has not ended, and
scopes every read and write to the tenant it names; once the attempt is over,
the token opens nothing. So a compromised engine can reach its own tenant's
artifacts for as long as its attempt runs, and nothing else.

Format: ``nexa_at_<payload>.<mac>``, both base64url without padding; the payload
is compact JSON ``{"j": job_id, "a": attempt, "t": tenant}``, the MAC is
HMAC-SHA256 over the payload's text under the shared secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

PREFIX = "nexa_at_"
ATTEMPT_TOKEN_ENV = "NEXA_ATTEMPT_TOKEN"  # where an engine pod finds its token
MAX_TOKEN_LENGTH = 1024
_CONTEXT = b"nexa attempt token\0"


class InvalidAttemptToken(ValueError):
    """Not a token this secret made (malformed, or signed with another secret)."""


@dataclass(frozen=True)
class AttemptClaim:
    """What a valid token names."""

    job_id: str
    attempt: int
    tenant: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, _CONTEXT + payload.encode(), hashlib.sha256).digest())


def mint(secret: bytes, job_id: str, attempt: int, tenant: str) -> str:
    """The token for ``attempt`` of ``job_id`` run for ``tenant``."""
    if not secret:
        raise ValueError("an attempt token needs a non-empty secret")
    payload = _b64(json.dumps({"j": job_id, "a": attempt, "t": tenant}, separators=(",", ":")).encode())
    return f"{PREFIX}{payload}.{_mac(secret, payload)}"


def looks_like_token(value: str) -> bool:
    return value.startswith(PREFIX)


def verify(secret: bytes, token: str) -> AttemptClaim:
    """What ``token`` names, if this secret signed it; ``InvalidAttemptToken`` otherwise."""
    if not secret or not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAttemptToken("not an attempt token")
    payload, dot, mac = token[len(PREFIX) :].partition(".")
    if not dot or not hmac.compare_digest(mac, _mac(secret, payload)):
        raise InvalidAttemptToken("the attempt token's signature does not match")
    try:
        doc = json.loads(_unb64(payload))
        claim = AttemptClaim(str(doc["j"]), int(doc["a"]), str(doc["t"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidAttemptToken("the attempt token's payload is malformed") from exc
    if claim.attempt < 1:
        raise InvalidAttemptToken("the attempt token names no attempt")
    return claim
