"""Prometheus metrics of the serving process (``GET /metrics``); one registry per app so tests can build many."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:  # importing it for real would pull in torch, which the dashboard check does not need
    from nexa_engines.models.generation import GenerationResult

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


class ServingMetrics:
    """Request, latency, token and batch-size metrics of one served model."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nexa_endpoint_requests_total",
            "Inference requests by model, route template and status code.",
            ["model", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nexa_endpoint_request_duration_seconds",
            "Time until the response starts (first byte of a stream), by model and route template.",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "nexa_endpoint_generated_tokens_total",
            "Completion tokens generated, by model.",
            ["model"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nexa_endpoint_batch_size",
            "Rows in the running batch at each decode step.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def observe_step(self, batch_size: int) -> None:
        """Record one decode step over ``batch_size`` rows."""
        self.batch_size.observe(batch_size)

    def observe_done(self, result: GenerationResult) -> None:
        """Count a finished request's completion tokens."""
        self.tokens.labels(self.model_name).inc(result.completion_tokens)

    def install(self, app: FastAPI) -> None:
        """Count and time every request by route template, and serve ``GET /metrics``."""

        # A plain ASGI middleware: the decorator kind (BaseHTTPMiddleware) cost the server ~3x its throughput.
        app.add_middleware(_Measure, metrics=self)

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _Measure:
    """Counts and times every HTTP request by route template; the time ends when the response starts."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "seconds": None}

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["seconds"] = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            # Unmatched paths share one label so scanners cannot blow up the series count.
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            if template != "/metrics":
                m = self.metrics
                seconds = seen["seconds"] if seen["seconds"] is not None else time.perf_counter() - started
                m.requests.labels(m.model_name, template, str(seen["status"])).inc()
                m.latency.labels(m.model_name, template).observe(seconds)
