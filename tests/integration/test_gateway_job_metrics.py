"""Job duration and GPU-time metrics of the standalone gateway, read back from its real /metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.gateway_app import Gateway, build_gateway

DURATION = "nexa_job_duration_seconds"
GPU_SECONDS = "nexa_job_gpu_seconds_total"


def scrape(gw: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by sample name and label set."""
    text = gw.client.get("/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def gpu_series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, float]:
    return {dict(labels)["gpu_type"]: v for (name, labels), v in samples.items() if name == GPU_SECONDS}


def claim_only(gw: Gateway, worker: dict[str, str], job: dict[str, Any]) -> str:
    claimed = gw.claim(worker)
    assert claimed is not None and claimed["job_id"] == job["job_id"]
    return f"/v1/workers/jobs/{job['job_id']}"


def test_a_metered_gpu_job_exports_its_duration_and_reported_gpu_seconds(gateway: Gateway) -> None:
    worker = gateway.register_worker(cpu_count=8, memory_gb=64, gpus=4, gpu_type="H100")
    job = gateway.submit_audit(resources={"gpus": 2, "gpu_type": "H100"})
    base = claim_only(gateway, worker, job)
    assert value(scrape(gateway), f"{DURATION}_count", type="audit", phase="Completed") == 0
    body = {"attempt": 1, "result": {}, "usage": [{"kind": "gpu_seconds", "amount": 123.5}]}
    assert gateway.client.post(f"{base}/complete", json=body, headers=worker).status_code == 204

    samples = scrape(gateway)
    assert value(samples, f"{DURATION}_count", type="audit", phase="Completed") == 1
    # The worker's meter wins over GPUs x wall time (which would be well under a second here).
    assert gpu_series(samples) == {"H100": 123.5}
    # A duplicate report is refused and observes nothing more.
    assert gateway.client.post(f"{base}/complete", json=body, headers=worker).status_code == 409
    assert value(scrape(gateway), f"{DURATION}_count", type="audit", phase="Completed") == 1


def test_an_unmetered_gpu_job_counts_gpus_times_wall_time_and_cpu_jobs_count_no_gpu(gateway: Gateway) -> None:
    worker = gateway.register_worker(cpu_count=8, memory_gb=64, gpus=4)
    gpu_job = gateway.submit_audit(resources={"gpus": 3})
    base = claim_only(gateway, worker, gpu_job)
    time.sleep(0.3)
    fail = {"attempt": 1, "code": "bad_data", "message": "column missing"}
    assert gateway.client.post(f"{base}/fail", json=fail, headers=worker).status_code == 204

    cpu_job = gateway.submit_audit()
    base = claim_only(gateway, worker, cpu_job)
    assert (
        gateway.client.post(f"{base}/complete", json={"attempt": 1, "result": {}}, headers=worker).status_code
        == 204
    )

    samples = scrape(gateway)
    failed_seconds = value(samples, f"{DURATION}_sum", type="audit", phase="Failed")
    assert value(samples, f"{DURATION}_count", type="audit", phase="Failed") == 1
    assert value(samples, f"{DURATION}_count", type="audit", phase="Completed") == 1
    assert 0.3 <= failed_seconds < 30
    # No GPU type asked for: "any", the operator's label for the same case. The CPU job adds nothing.
    assert gpu_series(samples) == {"any": 3 * failed_seconds}


def test_a_retried_attempt_is_not_a_finished_job(gateway: Gateway) -> None:
    worker = gateway.register_worker()
    job = gateway.submit_audit(max_retries=1)
    base = claim_only(gateway, worker, job)
    retry = {"attempt": 1, "code": "oom", "message": "out of memory", "retryable": True}
    assert gateway.client.post(f"{base}/fail", json=retry, headers=worker).status_code == 204
    assert all(
        value(scrape(gateway), f"{DURATION}_count", type="audit", phase=p) == 0
        for p in ("Failed", "Completed")
    )
    claim_only(gateway, worker, job)
    done = gateway.client.post(f"{base}/complete", json={"attempt": 2, "result": {}}, headers=worker)
    assert done.status_code == 204
    assert value(scrape(gateway), f"{DURATION}_count", type="audit", phase="Completed") == 1


def test_cancelling_a_job_that_never_ran_observes_a_zero_duration(sqlite_gateway: Gateway) -> None:
    job = sqlite_gateway.submit_audit(resources={"gpus": 1})
    cancel = sqlite_gateway.client.post(f"/v1/jobs/{job['job_id']}/cancel", headers=sqlite_gateway.auth())
    assert cancel.json()["status"] == "cancelled"
    samples = scrape(sqlite_gateway)
    assert value(samples, f"{DURATION}_bucket", type="audit", phase="Cancelled", le="1.0") == 1
    assert value(samples, f"{DURATION}_sum", type="audit", phase="Cancelled") == 0
    assert gpu_series(samples) == {}


def test_a_job_failed_by_the_lease_reaper_is_observed(tmp_path: Path) -> None:
    for gw in build_gateway(f"sqlite:///{tmp_path / 'reaped.db'}", tmp_path / "gw", lease_seconds=1):
        worker = gw.register_worker(gpus=1, gpu_type="L4")
        job = gw.submit_audit(resources={"gpus": 1, "gpu_type": "L4"}, max_retries=0)
        claim_only(gw, worker, job)
        deadline = time.monotonic() + 10
        while value(scrape(gw), f"{DURATION}_count", type="audit", phase="Failed") == 0:
            assert time.monotonic() < deadline, "the reaper never failed the silent worker's job"
            time.sleep(0.1)
        samples = scrape(gw)
        assert gw.client.get(f"/v1/jobs/{job['job_id']}", headers=gw.auth()).json()["status"] == "failed"
        assert gpu_series(samples) == {"L4": value(samples, f"{DURATION}_sum", type="audit", phase="Failed")}
        assert gpu_series(samples)["L4"] >= 1
