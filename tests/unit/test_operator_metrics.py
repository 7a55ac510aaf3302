"""The operator's job metrics: one observation per NexaJob, GPU time as GPUs x wall time."""

from __future__ import annotations

from typing import Any

import pytest

from nexa.telemetry import JOB_DURATION_BUCKETS

operator_metrics = pytest.importorskip("nexa_operator.metrics")


def sample(metrics: Any, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else float(got)


def test_a_nexajob_seen_finished_many_times_is_counted_once() -> None:
    metrics = operator_metrics.OperatorMetrics()
    # Every later reconcile or resync of a finished NexaJob reports it again.
    for _ in range(3):
        metrics.observe_finished("uid-1", "train", "Completed", 90.0, 2, "H100")
    metrics.observe_finished("uid-2", "train", "Completed", 30.0, 2, "H100")

    assert sample(metrics, "nexa_job_duration_seconds_count", type="train", phase="Completed") == 2
    assert sample(metrics, "nexa_job_duration_seconds_sum", type="train", phase="Completed") == 120
    assert sample(metrics, "nexa_job_gpu_seconds_total", type="train", gpu_type="H100") == 2 * 90 + 2 * 30


@pytest.mark.parametrize(
    ("phase", "seconds", "gpus", "gpu_type", "gpu_label", "gpu_seconds"),
    [
        ("Failed", 100.0, 4, None, "any", 400.0),
        ("Cancelled", 10.0, 1, "A100", "A100", 10.0),
        ("Completed", 50.0, 0, None, "any", 0.0),
        # A clock skewed between start and end must not subtract GPU time.
        ("Completed", -5.0, 2, "L4", "L4", 0.0),
    ],
)
def test_gpu_time_is_gpus_times_wall_time(
    phase: str, seconds: float, gpus: int, gpu_type: str | None, gpu_label: str, gpu_seconds: float
) -> None:
    metrics = operator_metrics.OperatorMetrics()
    metrics.observe_finished("uid", "evaluate", phase, seconds, gpus, gpu_type)

    assert sample(metrics, "nexa_job_duration_seconds_count", type="evaluate", phase=phase) == 1
    assert sample(metrics, "nexa_job_gpu_seconds_total", type="evaluate", gpu_type=gpu_label) == gpu_seconds


def test_durations_land_in_the_shared_buckets() -> None:
    metrics = operator_metrics.OperatorMetrics()
    metrics.observe_finished("uid", "audit", "Completed", 45.0, 0, None)

    for bound in JOB_DURATION_BUCKETS:
        want = 1.0 if bound >= 45 else 0.0
        got = sample(
            metrics, "nexa_job_duration_seconds_bucket", type="audit", phase="Completed", le=str(float(bound))
        )
        assert got == want, bound
