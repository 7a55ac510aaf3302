"""Prometheus metrics of the operator: reconciles, their durations, NexaJobs by phase."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class OperatorMetrics:
    """One registry per operator process; ``serve`` exposes it on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "nexa_operator_reconciles_total",
            "Reconciles by resource kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "nexa_operator_reconcile_duration_seconds",
            "Time one reconcile took.",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.jobs_created = Counter(
            "nexa_operator_jobs_created_total",
            "Kubernetes Jobs created, one per attempt.",
            registry=self.registry,
        )
        self.phases = Gauge(
            "nexa_operator_nexajobs",
            "NexaJobs this operator has seen, by phase.",
            ["phase"],
            registry=self.registry,
        )
        self._phase_of: dict[str, str] = {}

    def observe_phase(self, uid: str, phase: str | None) -> None:
        """Record a NexaJob's current phase (None when it was deleted)."""
        old = self._phase_of.pop(uid, None)
        if old is not None:
            self.phases.labels(old).dec()
        if phase is not None:
            self._phase_of[uid] = phase
            self.phases.labels(phase).inc()

    def serve(self, port: int) -> None:
        """Serve ``/metrics`` on ``port`` from a background thread."""
        start_http_server(port, registry=self.registry)
