"""The gateway's cluster backend: the same HTTP API, with jobs as NexaJobs run by the operator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexa.contracts.crd import run_result_key
from nexa_engines.run_one import result_record, write_result_record
from nexa_gateway.backends.kubernetes import KubernetesJobBackend, tenant_namespace
from tests.fixtures.k8s import K8sCluster
from tests.integration.gateway_app import Gateway, build_gateway
from tests.integration.test_operator_kopf import OperatorProcess, install_crds, wait_for

pytest.importorskip("kubernetes")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def cluster_gateway(tmp_path: Path, k8s_cluster: K8sCluster) -> Iterator[tuple[Gateway, str]]:
    install_crds(k8s_cluster)
    prefix = f"nx{uuid.uuid4().hex[:6]}-"
    for gw in build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "gw"):
        state = gw.client.app.state.nexa  # type: ignore[attr-defined]
        state.backend = KubernetesJobBackend(
            state, namespace_prefix=prefix, api_client=k8s_cluster.api_client()
        )
        yield gw, prefix


def tenant_of(gw: Gateway) -> str:
    r = gw.client.get("/v1/keys", headers=gw.auth())
    assert r.status_code == 200, r.text
    return str(r.json()[0]["tenant_id"])


def test_submit_run_and_read_back_through_the_api(
    cluster_gateway: tuple[Gateway, str], k8s_cluster: K8sCluster, tmp_path: Path
) -> None:
    gw, prefix = cluster_gateway
    job = gw.submit_audit(labels={"team": "a"})
    assert job["status"] == "pending" and job["job_id"].startswith("job_")
    assert job["spec"]["labels"] == {"team": "a"}
    namespace = tenant_namespace(prefix, tenant_of(gw))
    names = k8s_cluster.kubectl("get", "nexajobs", "-n", namespace, "-o", "name").stdout
    assert f"nexajob.nexa.run/{job['job_id'].replace('_', '-', 1)}" in names

    artifacts = tmp_path / "artifacts"
    record = result_record(job["job_id"], 1, {"score": 0.5}, [], {})
    write_result_record({"NEXA_ARTIFACT_ROOT": str(artifacts)}, job["job_id"], 1, record)
    assert (artifacts / run_result_key(job["job_id"], 1)).exists()
    operator = OperatorProcess(k8s_cluster, namespace, artifacts, tmp_path)
    operator.start()
    try:

        def finished() -> dict[str, Any] | None:
            body = gw.client.get(f"/v1/jobs/{job['job_id']}", headers=gw.auth()).json()
            return body if body["status"] in ("completed", "failed", "cancelled") else None

        done = wait_for("the job to finish", finished, 90)
        assert done["status"] == "completed", done
        assert done["result"] == {"score": 0.5} and done["attempts"] == 1
        assert done["finished_at"] is not None
        assert any(e["kind"] == "Succeeded" for e in done["events"])

        listed = gw.client.get("/v1/jobs?label=team=a", headers=gw.auth()).json()
        assert [j["job_id"] for j in listed["items"]] == [job["job_id"]]
        assert gw.client.get("/v1/jobs?status=running", headers=gw.auth()).json()["items"] == []

        stream = gw.client.get(f"/v1/jobs/{job['job_id']}/logs?follow=false", headers=gw.auth())
        assert stream.status_code == 200 and 'event: end\ndata: {"status": "completed"}' in stream.text

        refused = gw.client.post(f"/v1/jobs/{job['job_id']}/cancel", headers=gw.auth())
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "conflict"
    finally:
        operator.stop()


def test_idempotency_cancel_and_tenant_isolation(cluster_gateway: tuple[Gateway, str]) -> None:
    gw, _ = cluster_gateway
    body = {"dataset_uri": str(gw.dataset_file())}
    headers = {**gw.auth(), "Idempotency-Key": "k-1"}
    first = gw.client.post("/v1/audit", json=body, headers=headers)
    again = gw.client.post("/v1/audit", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["job_id"] == again.json()["job_id"]
    other = gw.client.post("/v1/audit", json={**body, "ngram": 3}, headers=headers)
    assert other.status_code == 409

    job_id = first.json()["job_id"]
    cancelled = gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=gw.auth())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=gw.auth()).json()["status"] == "cancelled"

    stranger = gw.new_tenant_key("someone-else")
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events", f"/v1/jobs/{job_id}/logs"):
        r = gw.client.get(path, headers=gw.auth(stranger))
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    assert gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=gw.auth(stranger)).status_code == 404
    assert gw.client.get("/v1/jobs", headers=gw.auth(stranger)).json()["items"] == []
    assert gw.client.get("/v1/jobs/job_doesnotexist", headers=gw.auth()).status_code == 404


def test_list_pages_newest_first(cluster_gateway: tuple[Gateway, str]) -> None:
    gw, _ = cluster_gateway
    ids = [gw.submit_audit()["job_id"] for _ in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = gw.client.get(url, headers=gw.auth()).json()
        seen.extend(j["job_id"] for j in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 3
    assert gw.client.get("/v1/jobs?cursor=%%%", headers=gw.auth()).status_code == 400
