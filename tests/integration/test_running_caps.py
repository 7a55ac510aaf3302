"""A budget cap stops a training job while it runs: real gateway and worker processes, a real
training loop. The job ends ``budget_exceeded``, keeps a resumable checkpoint and is charged
exactly up to its cap, however long the worker took to notice."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fixtures.gateway_proc import GatewayFactory, WorkerFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CAP_CENTS = 40
# CPU time is free in the shipped books; this one charges $360 per CPU-hour (10 cents a CPU-second),
# so a tiny model reaches the cap within seconds while its 100,000 steps would take many minutes.
PRICE_BOOK = {
    "name": "cpu-priced",
    "versions": [
        {
            "effective_from": "2026-01-01T00:00:00Z",
            "rates": [{"kind": "cpu_hours", "price": "360", "label": "CPU-hours"}],
        }
    ],
}


def _job(url: str, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json())


def test_a_running_training_job_stops_at_its_cap_keeps_its_checkpoint_and_is_charged_the_cap(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    from nexa_engines.models import tiny

    rows = tiny.word_task_rows()
    model = tiny.build_tiny_model(tmp_path / "base", tiny.word_task_corpus(rows), tiny.STUDENT)
    data = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    book = tmp_path / "prices.json"
    book.write_text(json.dumps(PRICE_BOOK))
    env = {"NEXA_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    gw = gateway_factory(extra_env={**env, "NEXA_PRICE_BOOK": str(book)})
    worker_factory(gw, extra_env=env)
    headers = gw.headers()

    body = {
        "dataset_id": str(data),
        "model": str(model),
        "epochs": 1000,
        "max_steps": 100_000,
        "checkpoint_every_steps": 100_000,  # no checkpoint but the one the stop keeps
        "holdout_fraction": 0.0,
        "max_cost_cents": CAP_CENTS,
    }
    submitted = httpx.post(f"{gw.url}/v1/train", json=body, headers=headers, timeout=30)
    assert submitted.status_code == 201, submitted.text  # machine time is not estimated: accepted
    job_id = submitted.json()["job_id"]

    deadline = time.monotonic() + 480
    job = _job(gw.url, headers, job_id)
    while job["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {job.get('events')}"
        time.sleep(0.5)
        job = _job(gw.url, headers, job_id)

    assert job["status"] == "failed", job
    assert job["error"]["code"] == "budget_exceeded", job["error"]
    assert f"max_cost_cents {CAP_CENTS}" in job["error"]["message"]
    assert not job["error"]["retryable"] and job["attempts"] == 1
    kinds = [e["kind"] for e in job["events"]]
    assert "budget_exceeded" in kinds and "charged_to_cap" in kinds, kinds

    # The work paid for is kept: a resumable checkpoint of this job, readable by its tenant.
    kept = [
        w
        for w in job["error"]["message"].replace(",", " ").replace(")", " ").split()
        if w.startswith("ckpt_")
    ]
    assert len(kept) == 1, job["error"]["message"]
    info = httpx.get(f"{gw.url}/v1/artifacts/{kept[0]}", headers=headers, timeout=30)
    assert info.status_code == 200, info.text
    manifest = info.json()["manifest"]
    assert manifest["job_id"] == job_id and manifest["config"]["step"] > 0
    assert "trainer_state.pt" in {f["path"] for f in manifest["files"]}

    # It ran past the cap before the worker heard of the stop; it is charged the cap, no more.
    bill = httpx.get(f"{gw.url}/v1/billing/summary", headers=headers, timeout=30).json()
    assert bill["total_cents"] == CAP_CENTS, bill
    assert [j["job_id"] for j in bill["by_job"]] == [job_id]
