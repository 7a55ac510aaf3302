"""Prometheus metrics for the gateway; one registry per app so tests can build many apps.

Counters and histograms count what this process did (Prometheus sums them over
replicas); ``nexa_jobs`` is read from the shared database, so every replica
reports the same figure and dashboards take its ``max``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexa.contracts.nexajob import PHASE_STATES, TERMINAL_PHASES
from nexa.telemetry import JOB_DURATION_BUCKETS, JOB_DURATION_METRIC, JOB_GPU_SECONDS_METRIC

# The operator labels job metrics with NexaJob phases; using the same values here lets one
# dashboard query read standalone and cluster mode alike.
_PHASE_OF_STATE = {state: phase for phase, state in PHASE_STATES.items() if phase in TERMINAL_PHASES}


@dataclass(frozen=True)
class FinishedJob:
    """What one job that reached a terminal state adds to the job metrics."""

    job_type: str
    status: str  # completed | failed | cancelled
    seconds: float  # first claim to end; 0 for a job that never ran
    gpu_type: str | None
    gpu_seconds: float  # 0 for a job that asked for no GPU


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nexa_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nexa_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "nexa_jobs_submitted_total", "Jobs accepted, by type.", ["type"], registry=self.registry
        )
        self.jobs_finished = Counter(
            "nexa_jobs_finished_total",
            "Jobs that reached a terminal state, by type and state.",
            ["type", "status"],
            registry=self.registry,
        )
        self.claims = Counter(
            "nexa_job_claims_total", "Jobs handed to workers.", ["type"], registry=self.registry
        )
        self.leases_expired = Counter(
            "nexa_job_leases_expired_total",
            "Attempts whose worker stopped heartbeating.",
            registry=self.registry,
        )
        self.report_signatures_refused = Counter(
            "nexa_report_signatures_refused_total",
            "Final reports refused because they were not signed with their node's key (or signed another report).",
            registry=self.registry,
        )
        self.stale_reports = Counter(
            "nexa_worker_stale_reports_total",
            "Worker reports refused because their attempt was no longer current (fencing).",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "nexa_rate_limited_total", "Requests refused with 429.", registry=self.registry
        )
        self.usage = Counter(
            "nexa_usage_total",
            "Metered usage recorded, by kind (rows, tokens, gpu_seconds…).",
            ["kind"],
            registry=self.registry,
        )
        self.spend = Counter(
            "nexa_spend_dollars_total",
            "What recorded usage costs under the price book in force when it was recorded, by job type.",
            ["type"],
            registry=self.registry,
        )
        self.worker_registrations = Counter(
            "nexa_worker_registrations_total", "Worker registrations accepted.", registry=self.registry
        )
        self.job_duration = Histogram(
            JOB_DURATION_METRIC,
            "Wall time of finished jobs, first claim to end, by job type and terminal phase.",
            ["type", "phase"],
            buckets=JOB_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.gpu_seconds = Counter(
            JOB_GPU_SECONDS_METRIC,
            "GPU time of finished jobs (metered when the worker reported it, else GPUs x wall time).",
            ["type", "gpu_type"],
            registry=self.registry,
        )

    def observe_job_finished(self, job: FinishedJob) -> None:
        """Record a job's duration and GPU time; call once per job, after the commit that finished it."""
        self.job_duration.labels(job.job_type, _PHASE_OF_STATE[job.status]).observe(max(0.0, job.seconds))
        if job.gpu_seconds > 0:
            self.gpu_seconds.labels(job.job_type, job.gpu_type or "any").inc(job.gpu_seconds)

    def add_state_collector(self, count_by_state: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """Expose live job counts by type and state, read from the database at scrape time."""
        self.registry.register(_JobStateCollector(count_by_state))


class _JobStateCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self._source = source

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily("nexa_jobs", "Jobs by type and state.", labels=["type", "status"])
        for job_type, status, count in self._source():
            family.add_metric([job_type, status], count)
        yield family


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware) recording count and latency per route."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (template, scope.get("method", "GET"), status)
            children = self._children.get(key)
            if children is None:
                # labels() takes a lock and builds a tuple every call; keep the children.
                children = (
                    self.metrics.requests.labels(key[0], key[1], str(status)),
                    self.metrics.latency.labels(key[0], key[1]),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
