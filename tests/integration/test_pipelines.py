"""Pipelines with real gateway and worker processes (standalone mode): steps chained by their
outputs, an approval, a gate that stops the pipeline, resume, the cache, the SSE timeline, lineage,
and a gateway SIGKILLed mid-pipeline that resumes without running any step twice."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexa.client import NexaClient
from tests.fixtures.gateway_proc import GatewayFactory, GatewayProcess, WorkerFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEADLINE_S = 240.0


def _rows(tmp_path: Path, name: str = "rows.jsonl", n: int = 40, distinct: int = 40) -> Path:
    path = tmp_path / name
    path.write_text(
        "".join(
            f'{{"text": "row {i % distinct} says something plain about item {i % 7}"}}\n' for i in range(n)
        )
    )
    return path


def _call(gw: GatewayProcess, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    r = httpx.request(method, f"{gw.url}{path}", json=body, headers=gw.headers(), timeout=30)
    assert r.status_code == status, r.text
    return r.json()


def _wait(gw: GatewayProcess, pipeline_id: str, *wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        pipeline = _call(gw, "GET", f"/v1/pipelines/{pipeline_id}")
        if pipeline["status"] in wanted:
            return dict(pipeline)
        assert time.monotonic() < deadline, (
            f"pipeline stayed {pipeline['status']}: {json.dumps(pipeline['steps'])}"
        )
        time.sleep(0.3)


def _steps(pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in pipeline["steps"]}


def _events(gw: GatewayProcess, pipeline_id: str) -> list[tuple[str, str | None]]:
    """The timeline read through the SSE route (follow=false): (kind, step) in order."""
    found = []
    with httpx.stream(
        "GET", f"{gw.url}/v1/pipelines/{pipeline_id}/events?follow=false", headers=gw.headers(), timeout=30
    ) as r:
        assert r.status_code == 200
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: ") and kind != "end":
                data = json.loads(line[len("data: ") :])
                assert data["kind"] == kind
                found.append((kind, data.get("step")))
    return found


def _chain(dataset_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "audit-twice",
        "labels": {"team": "data"},
        "parameters": {"raw": dataset_id},
        "steps": [
            {"name": "score", "type": "audit", "spec": {"dataset_id": "{params.raw}"}, **extra},
            {
                "name": "rescore",
                "type": "audit",
                "approval": True,
                "spec": {"dataset_id": "{steps.score.outputs.dataset_id}", "labels": {"from": "score"}},
            },
        ],
    }


def test_steps_chain_wait_for_approval_cache_and_lineage(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    gw = gateway_factory()
    worker_factory(gw, extra_args=["--job-types", "audit"])
    with NexaClient(api_key=gw.api_key, base_url=gw.url, timeout=60.0) as client:
        raw = client.upload_dataset(_rows(tmp_path), name="raw-rows").dataset_id

    created = _call(gw, "POST", "/v1/pipelines", _chain(raw), status=201)
    pipeline_id = created["pipeline_id"]
    assert created["status"] == "pending" and [s["status"] for s in created["steps"]] == [
        "pending",
        "pending",
    ]

    waiting = _wait(gw, pipeline_id, "waiting", "failed")
    steps = _steps(waiting)
    assert waiting["status"] == "waiting", waiting
    assert steps["score"]["status"] == "completed" and steps["rescore"]["status"] == "waiting_approval"
    scored = steps["score"]["outputs"]["dataset_id"]
    assert scored.startswith("ds_") and scored != raw

    _call(gw, "POST", f"/v1/pipelines/{pipeline_id}/steps/rescore/approve")
    _call(gw, "POST", f"/v1/pipelines/{pipeline_id}/steps/rescore/approve", status=409)  # once only
    done = _wait(gw, pipeline_id, "completed", "failed")
    assert done["status"] == "completed", done
    steps = _steps(done)
    rescore_job = _call(gw, "GET", f"/v1/jobs/{steps['rescore']['job_id']}")
    # The step's spec got the earlier step's output; the job carries the pipeline's labels and its own.
    assert rescore_job["spec"]["dataset_uri"] == scored
    assert rescore_job["labels"] == {
        "team": "data",
        "from": "score",
        "nexa.dev/pipeline": pipeline_id,
        "nexa.dev/pipeline-step": "rescore",
    }
    assert steps["rescore"]["approved_by"]
    assert _events(gw, pipeline_id) == [
        ("created", None),
        ("step.started", "score"),
        ("step.completed", "score"),
        ("step.waiting_approval", "rescore"),
        ("step.approved", "rescore"),
        ("step.started", "rescore"),
        ("step.completed", "rescore"),
        ("completed", None),
    ]

    # Lineage from the last dataset up to the raw upload, each node naming its job and step.
    final = steps["rescore"]["outputs"]["dataset_id"]
    graph = _call(gw, "GET", f"/v1/artifacts/{final}/lineage?direction=up")
    nodes = {n["id"]: n for n in graph["nodes"]}
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert {(scored, final), (raw, scored)} <= edges
    assert nodes[final]["pipeline_step"] == "rescore" and nodes[final]["pipeline_id"] == pipeline_id
    assert nodes[scored]["job_type"] == "audit" and nodes[raw]["job_id"] is None  # an upload
    manifest = _call(gw, "GET", f"/v1/artifacts/{final}")["manifest"]
    assert manifest["pipeline_id"] == pipeline_id and manifest["code_version"].startswith("nexa-forge ")
    down = _call(gw, "GET", f"/v1/artifacts/{raw}/lineage?direction=down&depth=1")
    assert {n["id"] for n in down["nodes"]} == {raw, scored} and down["truncated"] is True

    # The same pipeline again: nothing changed, so both steps reuse the first run's outputs.
    again = _call(gw, "POST", "/v1/pipelines", _chain(raw), status=201)
    second = _wait(gw, again["pipeline_id"], "waiting", "completed", "failed")
    assert _steps(second)["score"]["status"] == "cached", second
    assert _steps(second)["score"]["cached_from"] == steps["score"]["job_id"]
    _call(gw, "POST", f"/v1/pipelines/{again['pipeline_id']}/steps/rescore/approve")
    second = _wait(gw, again["pipeline_id"], "completed", "failed")
    assert [s["status"] for s in second["steps"]] == ["cached", "cached"], second
    assert second["steps"][1]["outputs"]["dataset_id"] == final
    jobs = _call(gw, "GET", "/v1/jobs?label=team%3Ddata")["items"]
    assert len(jobs) == 2  # the cached run submitted none


def test_gate_failure_stops_the_pipeline_and_resume_runs_only_what_failed(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    gw = gateway_factory()
    worker_factory(gw, extra_args=["--job-types", "audit"])
    with NexaClient(api_key=gw.api_key, base_url=gw.url, timeout=60.0) as client:
        # Three distinct rows repeated: exact duplicates everywhere, far below an A+ tier.
        raw = client.upload_dataset(_rows(tmp_path, distinct=3), name="raw-rows").dataset_id
    body = _chain(raw)
    body["steps"][1]["approval"] = False
    body["steps"][1]["gate"] = {"min_quality_tier": "A+"}
    body["steps"].append(
        {"name": "after", "type": "audit", "spec": {"dataset_id": "{steps.rescore.outputs.dataset_id}"}}
    )
    pipeline_id = _call(gw, "POST", "/v1/pipelines", body, status=201)["pipeline_id"]

    failed = _wait(gw, pipeline_id, "failed", "completed")
    assert failed["status"] == "failed", failed
    steps = _steps(failed)
    assert [steps[n]["status"] for n in ("score", "rescore", "after")] == ["completed", "failed", "skipped"]
    assert failed["error"]["code"] == "gate_failed" and failed["error"]["step"] == "rescore"
    assert "quality tier" in failed["error"]["message"] and "at least A+" in failed["error"]["message"]
    assert steps["rescore"]["gate"]["passed"] is False

    _call(gw, "POST", f"/v1/pipelines/{pipeline_id}/cancel", status=409)  # it already ended
    resumed = _call(gw, "POST", f"/v1/pipelines/{pipeline_id}/resume")
    assert resumed["runs"] == 2 and _steps(resumed)["score"]["status"] == "completed"
    again = _wait(gw, pipeline_id, "failed", "completed")
    steps_again = _steps(again)
    # The finished step was not run again; the failed one was (and its gate failed again).
    assert steps_again["score"]["job_ids"] == steps["score"]["job_ids"]
    assert len(steps_again["rescore"]["job_ids"]) == 2 and steps_again["after"]["status"] == "skipped"
    _call(gw, "POST", f"/v1/pipelines/{pipeline_id}/steps/after/approve", status=409)


def test_bad_pipelines_are_refused_with_the_reason(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory()
    cycle = {
        "name": "bad",
        "steps": [
            {"name": "a", "type": "train", "spec": {"dataset_id": "{steps.b.outputs.checkpoint_id}"}},
            {"name": "b", "type": "train", "spec": {"dataset_id": "{steps.a.outputs.checkpoint_id}"}},
        ],
    }
    r = httpx.post(f"{gw.url}/v1/pipelines", json=cycle, headers=gw.headers(), timeout=30)
    assert r.status_code == 422 and "cycle" in r.text
    unknown = {
        "name": "bad",
        "steps": [{"name": "a", "type": "audit", "spec": {"dataset_id": "{steps.a.outputs.x}"}}],
    }
    r = httpx.post(f"{gw.url}/v1/pipelines", json=unknown, headers=gw.headers(), timeout=30)
    assert r.status_code == 422 and "names the step itself" in r.text
    r = httpx.get(f"{gw.url}/v1/pipelines/pl_aaaaaaaaaaaaaaaaaaaaaaaaaa", headers=gw.headers(), timeout=30)
    assert r.status_code == 404
    # nexa.dev/ labels are the platform's: a caller sets them neither on a job nor in a pipeline.
    spoof = {"dataset_uri": "ds_" + "a" * 26, "labels": {"nexa.dev/pipeline": "pl_x"}}
    r = httpx.post(f"{gw.url}/v1/audit", json=spoof, headers=gw.headers(), timeout=30)
    assert r.status_code == 422 and r.json()["error"]["type"] == "reserved_label"
    labelled = {
        "name": "spoof",
        "steps": [{"name": "a", "type": "audit", "spec": {"dataset_id": "x", "labels": {"nexa.dev/x": "1"}}}],
    }
    r = httpx.post(f"{gw.url}/v1/pipelines", json=labelled, headers=gw.headers(), timeout=30)
    assert r.status_code == 422 and r.json()["error"]["type"] == "reserved_label"


def test_a_step_naming_a_missing_artifact_fails_alone_and_holds_up_no_other_pipeline(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    gw = gateway_factory()
    worker_factory(gw, extra_args=["--job-types", "audit"])
    missing = {
        "name": "broken",
        "steps": [{"name": "a", "type": "audit", "spec": {"dataset_id": "ds_" + "b" * 26}}],
    }
    broken = _call(gw, "POST", "/v1/pipelines", missing, status=201)["pipeline_id"]
    fine = {
        "name": "fine",
        "steps": [{"name": "a", "type": "audit", "spec": {"dataset_id": str(_rows(tmp_path))}}],
    }
    ok = _call(gw, "POST", "/v1/pipelines", fine, status=201)["pipeline_id"]
    failed = _wait(gw, broken, "failed", "completed")
    assert failed["error"]["code"] == "step_refused" and "dataset_not_found" in failed["error"]["message"], (
        failed
    )
    done = _wait(gw, ok, "completed", "failed")
    assert done["status"] == "completed", done
    # A local path is no content-addressed input: the step ran, and says why it was not cached.
    assert _steps(done)["a"]["reason"].startswith("not cached: dataset_uri names"), done


def test_gateway_killed_mid_pipeline_resumes_without_running_a_step_twice(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    gw = gateway_factory()
    worker_factory(gw, "cpu-node", extra_args=["--job-types", "audit", "--tier", "cpu"])
    data = _rows(tmp_path)
    body = {
        "name": "crash",
        "labels": {"run": "crash"},
        "steps": [
            {"name": "first", "type": "audit", "spec": {"dataset_id": str(data)}},
            # Only an hpc node can run the second step: none exists until after the crash, so the
            # gateway dies with that step's job submitted and pending.
            {
                "name": "second",
                "type": "audit",
                "spec": {"dataset_id": "{steps.first.outputs.dataset_id}", "resources": {"tier": "hpc"}},
            },
        ],
    }
    pipeline_id = _call(gw, "POST", "/v1/pipelines", body, status=201)["pipeline_id"]
    deadline = time.monotonic() + DEADLINE_S
    while _steps(_call(gw, "GET", f"/v1/pipelines/{pipeline_id}"))["second"]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    before = _steps(_call(gw, "GET", f"/v1/pipelines/{pipeline_id}"))

    gw.kill()
    gw.wait(30)
    gw.start()
    gw.wait_until_ready()
    worker_factory(gw, "hpc-node", extra_args=["--job-types", "audit", "--tier", "hpc"])

    done = _wait(gw, pipeline_id, "completed", "failed")
    assert done["status"] == "completed", done
    after = _steps(done)
    assert after["first"]["job_ids"] == before["first"]["job_ids"]
    assert after["second"]["job_ids"] == before["second"]["job_ids"]
    jobs = _call(gw, "GET", "/v1/jobs?label=run%3Dcrash")["items"]
    assert sorted(j["job_id"] for j in jobs) == sorted(
        before["first"]["job_ids"] + before["second"]["job_ids"]
    )
    kinds = [k for k, _ in _events(gw, pipeline_id)]
    assert kinds.count("step.started") == 2 and kinds[-1] == "completed"
