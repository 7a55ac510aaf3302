"""The mesh with real processes: a gateway and three workers, one of them patched to corrupt what it
writes. A verified audit completes from the honest quorum, the liar is flagged, loses reputation and
is charged a penalty, and the honest nodes are credited for work the gateway measured."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway_proc import GatewayFactory, WorkerFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# Loaded at the liar's start (sitecustomize): its audit reports a better score than it computed. Its
# manifest is self-consistent (hashed after the lie), so only comparing replicas can catch it.
LIAR_PATCH = """
import nexa_engines.audit.engine as engine

_honest = engine.render_json


def _lying(summary):
    return _honest({**summary, "mean_score": 0.999})


engine.render_json = _lying
"""


def _get(url: str, headers: dict[str, str], path: str) -> dict[str, Any]:
    r = httpx.get(f"{url}{path}", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_three_workers_one_liar_the_honest_quorum_wins(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(f'{{"text": "row {i} says something plain about item {i % 7}"}}\n' for i in range(40))
    )
    patch = tmp_path / "liar-patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(LIAR_PATCH)
    gw = gateway_factory(extra_env={"NEXA_HOLDBACK_SECONDS": "0"})
    headers = gw.headers()
    for name in ("honest-a", "honest-b"):
        worker_factory(gw, name, extra_args=["--job-types", "audit", "--tier", "cpu"])
    worker_factory(
        gw, "liar", extra_args=["--job-types", "audit", "--tier", "cpu"], extra_env={"PYTHONPATH": str(patch)}
    )

    body = {"dataset_uri": str(data), "verification": {"replicas": 3, "quorum": 2}}
    submitted = httpx.post(f"{gw.url}/v1/audit", json=body, headers=headers, timeout=30)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]

    # Done when the job ended and every replica was judged (the last one may finish after the quorum).
    deadline = time.monotonic() + 420
    while True:
        job = _get(gw.url, headers, f"/v1/jobs/{job_id}")
        seen = _get(gw.url, headers, f"/v1/jobs/{job_id}/verification")
        if job["status"] in ("completed", "failed") and all(
            r["verdict"] != "pending" for r in seen["replicas"]
        ):
            break
        assert time.monotonic() < deadline, (job, seen)
        time.sleep(0.5)

    assert job["status"] == "completed", job
    workers = {w["worker_id"]: w["name"] for w in _get(gw.url, headers, "/v1/workers")["items"]}
    by_name = {workers[r["worker_id"]]: r for r in seen["replicas"]}
    assert sorted(by_name) == ["honest-a", "honest-b", "liar"]  # one replica per node
    assert by_name["liar"]["verdict"] == "outlier"
    assert by_name["honest-a"]["verdict"] == by_name["honest-b"]["verdict"] == "agreed"
    assert by_name["honest-a"]["digest"] == by_name["honest-b"]["digest"] == seen["agreed_digest"]
    report = httpx.get(
        f"{gw.url}/v1/datasets/{job['result']['dataset_id']}", headers=headers, timeout=30
    ).json()
    assert report["dataset_id"] == job["result"]["dataset_id"]
    assert job["result"]["mean_score"] != 0.999  # the quorum's numbers, not the liar's

    ids = {name: r["worker_id"] for name, r in by_name.items()}
    liar = _get(gw.url, headers, f"/v1/credits/{ids['liar']}")
    honest = [_get(gw.url, headers, f"/v1/credits/{ids[n]}") for n in ("honest-a", "honest-b")]
    assert liar["outliers"] == 1 and liar["credits"] < 0 and liar["reputation"] < 0.5
    for node in honest:
        # Throughput measured by the gateway's benchmark challenge at registration, never self-reported.
        assert node["verified_gflops"] and node["verified_gflops"] > 0, node
        assert node["credits"] > 0 and node["verified_jobs"] == 1 and node["reputation"] > 0.5, node
        granted = [e for e in node["entries"] if e["kind"] == "credit"]
        assert len(granted) == 1 and granted[0]["credits"] == node["credits"]
        verified = _get(gw.url, headers, f"/v1/credits/{node['worker_id']}/verify")
        assert verified["ok"], verified
    board = _get(gw.url, headers, "/v1/leaderboard")["rows"]
    assert [r["name"] for r in board][-1] == "liar"


def test_nexa_demo_mesh_runs_a_verified_job_on_three_nodes_and_prints_the_leaderboard(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXA_")} | {"NEXA_HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "nexa.cli.main", "demo", "--mesh", "--rows", "200"],
        env=env | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "agreed (requested, exact, quorum 2)" in out, out
    assert out.count("agreed") >= 4 and "leaderboard" in out
    for tier in ("cpu", "consumer-gpu", "hpc"):
        assert tier in out
