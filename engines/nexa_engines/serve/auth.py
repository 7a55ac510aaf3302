"""Who may call a deployed endpoint: a key, checked by the serving process itself.

Two kinds of key are accepted, as ``Authorization: Bearer <key>`` (what the
``openai`` client and ``tritonclient`` send):

* the **endpoint key** the deploy job made (``nexa_ep_…``), scoped to this one
  endpoint; the process holds only its SHA-256 (``NEXA_SERVE_KEY_SHA256``);
* an **API key of the tenant** that deployed it, checked with the gateway
  (``GET /v1/keys/self``) and remembered for ``ttl`` seconds, so a revoked key
  stops working within that time and a gateway outage does not stop callers
  whose key was seen recently. Another tenant's key is refused.

Health probes (``/v2/health/*``) and ``/metrics`` stay open for the kubelet and
Prometheus. A refusal is OpenAI's 401 shape, so every client shows it plainly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

log = logging.getLogger("nexa.serve.auth")

ENDPOINT_KEY_PREFIX = "nexa_ep_"
# The shape of a tenant API key (nexa_ + base62 body and checksum): nothing else is worth asking about.
_API_KEY_RE = re.compile(r"^nexa_[0-9A-Za-z]{20,80}$")
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/metrics")


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class EndpointAuth:
    endpoint_key_sha256: frozenset[str] = frozenset()
    gateway_url: str | None = None
    tenant_id: str | None = None
    ttl: float = 30.0
    negative_ttl: float = 5.0
    outage_grace: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[bool, float, float]] = field(default_factory=dict)  # verdict, until, when asked
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint_key_sha256) or bool(self.gateway_url and self.tenant_id)

    def allows(self, key: str) -> bool:
        """True when ``key`` may call this endpoint (may ask the gateway; call off the event loop)."""
        digest = key_sha256(key)
        if any(hmac.compare_digest(digest, known) for known in self.endpoint_key_sha256):
            return True
        if not (self.gateway_url and self.tenant_id) or not _API_KEY_RE.match(key):
            return False  # garbage never costs a gateway round trip
        now = self.clock()
        with self._lock:
            cached = self._seen.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        verdict = self._ask_gateway(key)
        if verdict is None:
            # The gateway is unreachable: a key it approved recently keeps working for a while.
            return cached is not None and cached[0] and now - cached[2] < self.outage_grace
        with self._lock:
            if len(self._seen) >= 10_000:
                # Forget the oldest answers first, not every valid key at once.
                for old in sorted(self._seen, key=lambda d: self._seen[d][2])[:1000]:
                    del self._seen[old]
            self._seen[digest] = (verdict, now + (self.ttl if verdict else self.negative_ttl), now)
        return verdict

    def _ask_gateway(self, key: str) -> bool | None:
        try:
            r = httpx.get(
                f"{str(self.gateway_url).rstrip('/')}/v1/keys/self",
                headers={"Authorization": f"Bearer {key}"},
                timeout=5.0,
            )
        except httpx.HTTPError as exc:
            log.warning("cannot reach the gateway to check a key: %s", exc)
            return None
        if r.status_code in (401, 403):
            return False
        if r.status_code != 200:
            log.warning("the gateway answered %d to a key check", r.status_code)
            return None
        try:
            return bool(r.json().get("tenant_id") == self.tenant_id)
        except ValueError:
            return None

    def install(self, app: FastAPI) -> None:
        """Refuse every request without an accepted key, except health probes and metrics."""

        @app.middleware("http")
        async def require_key(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path in OPEN_PATHS:
                return await call_next(request)
            header = request.headers.get("authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                return unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
            if not await asyncio.to_thread(self.allows, key.strip()):
                return unauthorized("Incorrect API key for this endpoint.")
            return await call_next(request)


def unauthorized(message: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )
