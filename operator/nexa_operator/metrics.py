"""Prometheus metrics of the operator: reconciles, their durations, NexaJobs by phase, job
durations and GPU time (the same job metric names the standalone gateway exports)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from nexa.telemetry import JOB_DURATION_BUCKETS, JOB_DURATION_METRIC, JOB_GPU_SECONDS_METRIC


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
        self.job_duration = Histogram(
            JOB_DURATION_METRIC,
            "Wall time of finished jobs, start to end, by job type and terminal phase.",
            ["type", "phase"],
            registry=self.registry,
            buckets=JOB_DURATION_BUCKETS,
        )
        self.gpu_seconds = Counter(
            JOB_GPU_SECONDS_METRIC,
            "GPU time used by finished jobs (GPUs requested x wall time), by job type and GPU type.",
            ["type", "gpu_type"],
            registry=self.registry,
        )
        self._phase_of: dict[str, str] = {}
        self._finished: set[str] = set()

    def observe_finished(
        self, uid: str, job_type: str, phase: str, seconds: float, gpus: int, gpu_type: str | None
    ) -> None:
        """Count a NexaJob that reached a terminal phase, once per uid for this process."""
        if uid in self._finished:
            return
        self._finished.add(uid)
        self.job_duration.labels(job_type, phase).observe(max(0.0, seconds))
        if gpus > 0:
            self.gpu_seconds.labels(job_type, gpu_type or "any").inc(max(0.0, seconds) * gpus)

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
