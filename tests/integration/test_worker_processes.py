"""Real gateway and worker processes: audits end to end, and workers killed or frozen mid-job (R6, R7)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nexa import NexaClient
from nexa_engines.sample_data import generate_sft_dataset
from tests.fixtures.gateway_proc import GatewayFactory, GatewayProcess, WorkerFactory


def _job(gw: GatewayProcess, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{gw.url}/v1/jobs/{job_id}", headers=gw.headers(), timeout=10).json())


def _wait(
    gw: GatewayProcess, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = _job(gw, job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} did not get there in {timeout}s: {job['status']} {job.get('events')}")
        time.sleep(0.1)


def _submit_audit(gw: GatewayProcess, path: Path, **extra: Any) -> str:
    r = httpx.post(
        f"{gw.url}/v1/audit", json={"dataset_uri": str(path), **extra}, headers=gw.headers(), timeout=10
    )
    assert r.status_code == 201, r.text
    return str(r.json()["job_id"])


def test_audit_runs_end_to_end_through_the_sdk(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    gw = gateway_factory()
    worker_factory(gw)
    data = generate_sft_dataset(tmp_path / "sft.parquet", num_rows=600, seed=3)
    client = NexaClient(api_key=gw.api_key, base_url=gw.url)
    uploaded = client.upload_dataset(tmp_path / "sft.parquet")
    job = client.audit(dataset_uri=uploaded.dataset_id, labels={"demo": "yes"})
    finished = client.wait(job["job_id"], timeout=120, poll_interval=0.2)
    assert finished.status == "completed"
    result = finished.result or {}
    assert result["num_rows"] == 600
    for flag, rows in data["planted"].items():
        assert result["flag_counts"][flag] >= len(rows), (flag, result["flag_counts"])
    scored_id = result["dataset_id"]
    scored = client.get_dataset(scored_id)
    assert scored.num_rows == 600 and scored.job_id == job["job_id"]
    manifest = client.get_artifact(scored_id).manifest
    assert manifest is not None and manifest.attempt == 1 and manifest.inputs[0].sha256
    # Results name artifacts, never server paths; the bytes come through the API.
    assert result["scored_dataset_uri"] == f"internal://{scored_id}/scored.parquet"
    table = pq.read_table(pa.BufferReader(client.read_artifact_file(scored_id, "scored.parquet")))
    assert table.column_names[:4] == data["columns"]
    assert {"nexa_score", "nexa_flags", "nexa_cluster"} <= set(table.column_names)
    report = client.read_artifact_file(scored_id, "report.md").decode()
    assert "near_duplicate" in report
    lines = [line.line for line in client.logs(job["job_id"], follow=True)]
    assert any("scanned 600 rows" in line for line in lines)


def test_job_without_an_installed_engine_fails_at_once(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory
) -> None:
    gw = gateway_factory()
    # Told to claim container jobs on a machine without a container runtime (the engine cannot run).
    worker_factory(gw, extra_args=["--job-types", "container"], extra_env={"NEXA_CONTAINER_RUNTIME": "none"})
    r = httpx.post(
        f"{gw.url}/v1/container",
        json={"image": "python:3.11-slim", "command": ["python", "-c", "print(1)"], "max_retries": 5},
        headers=gw.headers(),
    )
    job_id = r.json()["job_id"]
    failed = _wait(gw, job_id, lambda j: j["status"] in ("failed", "completed"), timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "engine_not_installed"
    assert "container" in failed["error"]["message"]
    assert failed["attempts"] == 1  # not retried: it cannot succeed on a retry


def _scenario_dataset(tmp_path: Path) -> Path:
    # A real audit input; tests that kill a worker mid-job hold it there with a barrier (_held).
    path = tmp_path / "big.parquet"
    generate_sft_dataset(path, num_rows=40_000, seed=11)
    return path


def _held(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A worker environment whose attempt stops after its first progress until ``release`` exists.

    A barrier, not a race: the test kills or freezes the worker while its attempt is
    known to be mid-job, however busy the machine is.
    """
    release = tmp_path / "release-held-worker"
    return {"NEXA_TEST_HOLD_UNTIL": str(release)}, release


def _claimed_and_busy(job: dict[str, Any]) -> bool:
    return job["status"] == "running" and job["progress"] > 0.0


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_sigkill_mid_job_requeues_and_completes_once(
    db: str,
    request: pytest.FixtureRequest,
    gateway_factory: GatewayFactory,
    worker_factory: WorkerFactory,
    tmp_path: Path,
) -> None:
    url = request.getfixturevalue("postgres_url") if db == "postgres" else None
    gw = gateway_factory(database_url=url, lease_seconds=3)
    path = _scenario_dataset(tmp_path)
    held, _ = _held(tmp_path)
    victim = worker_factory(gw, "victim", extra_env=held)
    job_id = _submit_audit(gw, path)
    _wait(gw, job_id, _claimed_and_busy, timeout=90)
    victim.kill(signal.SIGKILL)
    worker_factory(gw, "rescuer")
    done = _wait(gw, job_id, lambda j: j["status"] in ("completed", "failed", "cancelled"), timeout=180)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    kinds = [e["kind"] for e in done["events"]]
    assert kinds.count("completed") == 1
    assert kinds.count("requeued") == 1
    requeue = next(e for e in done["events"] if e["kind"] == "requeued")
    assert "lease_expired" in requeue["message"]
    artifacts = httpx.get(f"{gw.url}/v1/artifacts", params={"job_id": job_id}, headers=gw.headers()).json()[
        "items"
    ]
    assert [a["artifact_id"] for a in artifacts] == [done["result"]["dataset_id"]]
    manifest = httpx.get(f"{gw.url}/v1/artifacts/{artifacts[0]['artifact_id']}", headers=gw.headers()).json()
    assert manifest["manifest"]["attempt"] == 2


def test_frozen_worker_cannot_promote_its_stale_attempt(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    gw = gateway_factory(lease_seconds=2)
    path = _scenario_dataset(tmp_path)
    held, release = _held(tmp_path)
    sleeper = worker_factory(gw, "sleeper", extra_env=held)
    job_id = _submit_audit(gw, path)
    _wait(gw, job_id, _claimed_and_busy, timeout=90)
    sleeper.kill(signal.SIGSTOP, group=True)
    try:
        _wait(gw, job_id, lambda j: j["status"] == "pending" and j["attempts"] == 1, timeout=30)
        worker_factory(gw, "rescuer")
        _wait(gw, job_id, lambda j: j["attempts"] == 2 and j["status"] == "running", timeout=60)
    finally:
        sleeper.kill(signal.SIGCONT, group=True)
    done = _wait(gw, job_id, lambda j: j["status"] in ("completed", "failed"), timeout=180)
    release.touch()  # the thawed worker finishes its stale attempt now, and is refused
    assert done["status"] == "completed" and done["attempts"] == 2
    # Give the thawed worker time to finish its stale attempt and be refused.
    deadline = time.monotonic() + 60
    metrics = ""
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{gw.url}/metrics").text
        if "nexa_worker_stale_reports_total 0.0" not in metrics:
            break
        time.sleep(0.5)
    assert "nexa_worker_stale_reports_total 0.0" not in metrics
    artifacts = httpx.get(f"{gw.url}/v1/artifacts", params={"job_id": job_id}, headers=gw.headers()).json()[
        "items"
    ]
    assert len(artifacts) == 1
    info = httpx.get(f"{gw.url}/v1/artifacts/{artifacts[0]['artifact_id']}", headers=gw.headers()).json()
    assert info["manifest"]["attempt"] == 2
    final = _job(gw, job_id)
    assert final["status"] == "completed" and [e["kind"] for e in final["events"]].count("completed") == 1


def test_audit_with_artifacts_in_s3(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path, s3_server: Any
) -> None:
    env = s3_server.env(bucket="nexa-e2e", prefix="team-a")
    gw = gateway_factory(extra_env=env)
    worker_factory(gw, extra_env=env)
    generate_sft_dataset(tmp_path / "sft.jsonl", num_rows=300, seed=5, fmt="jsonl")
    client = NexaClient(api_key=gw.api_key, base_url=gw.url)
    uploaded = client.upload_dataset(tmp_path / "sft.jsonl")
    assert uploaded.uri == f"internal://{uploaded.dataset_id}"  # the platform's bucket is not shown
    done = client.wait(
        client.audit(dataset_uri=uploaded.dataset_id)["job_id"], timeout=120, poll_interval=0.2
    )
    assert done.status == "completed"
    scored_id = (done.result or {})["dataset_id"]
    info = client.get_artifact(scored_id)
    assert info.uri == f"internal://{scored_id}"
    assert info.manifest is not None and {f.path for f in info.manifest.files} >= {
        "scored.parquet",
        "report.json",
    }
    # The bytes really are in the S3 server, verified against the manifest on the way out.
    store = s3_server.make_store(bucket="nexa-e2e", prefix="team-a")
    assert store.exists(scored_id)
    report = client.read_artifact_file(scored_id, "report.json")
    assert b'"num_rows": 300' in report or b'"num_rows":300' in report
