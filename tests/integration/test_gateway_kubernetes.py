"""The gateway's cluster backend: the same HTTP API, with jobs as NexaJobs run by the operator."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexa.contracts.nexajob import run_result_key
from nexa_engines.run_one import result_record, write_result_record
from nexa_gateway.backends.kubernetes import KubernetesJobBackend, tenant_namespace
from tests.fixtures.helm import VALUE_SETS, render
from tests.fixtures.k8s import K8sCluster
from tests.integration.gateway_app import Gateway, build_gateway
from tests.integration.operator_helpers import OperatorProcess, install_crds, wait_for

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
        assert (
            refused.status_code == 409 and refused.json()["error"]["type"] == "job_finished"
        )  # as in standalone
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


# ------------------------------------------------- the chart's identity: its RBAC and admission policy


@dataclass
class ChartIdentity:
    """The gateway's ServiceAccount and rights as the chart's cluster-mode values install them."""

    namespace: str  # the release namespace
    prefix: str  # gateway.kubernetes.namespacePrefix
    s3_secret: str
    token: str


def _gateway_rbac_objects(objects: list[dict[str, Any]], fullname: str) -> list[dict[str, Any]]:
    kinds = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    return [
        o for o in objects if o["kind"] in kinds and o["metadata"]["name"].startswith(f"{fullname}-gateway")
    ]


def _secret_data(values: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


@pytest.fixture
def chart_identity(k8s_cluster: K8sCluster, tmp_path: Path) -> Iterator[ChartIdentity]:
    from kubernetes import client

    install_crds(k8s_cluster)
    namespace = k8s_cluster.create_namespace()
    fullname = f"nx{uuid.uuid4().hex[:8]}"  # cluster-scoped names must not collide across tests
    prefix = f"{fullname}-t-"
    objects = render(
        VALUE_SETS["cluster-mode"],
        [f"fullnameOverride={fullname}", f"gateway.kubernetes.namespacePrefix={prefix}"],
        namespace=namespace,
    )
    wanted = _gateway_rbac_objects(objects, fullname)
    assert {o["kind"] for o in wanted} >= {"ServiceAccount", "ClusterRole", "ValidatingAdmissionPolicy"}
    manifest = tmp_path / "gateway-rbac.yaml"
    manifest.write_text(yaml.safe_dump_all(wanted))
    k8s_cluster.kubectl("apply", "-f", str(manifest))
    s3_secret = f"{fullname}-s3"
    with k8s_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": s3_secret},
                "data": _secret_data({"NEXA_S3_ACCESS_KEY": "ak-1", "NEXA_S3_SECRET_KEY": "sk-1"}),
            },
        )
        token = core.create_namespaced_service_account_token(
            f"{fullname}-gateway", namespace, {"spec": {"expirationSeconds": 3600}}
        ).status.token
    try:
        yield ChartIdentity(namespace=namespace, prefix=prefix, s3_secret=s3_secret, token=token)
    finally:
        k8s_cluster.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", str(manifest), check=False)
        with k8s_cluster.api_client() as api:
            core = client.CoreV1Api(api)
            for ns in core.list_namespace().items:
                if ns.metadata.name.startswith(prefix):
                    core.delete_namespace(ns.metadata.name)


def _as_gateway(k8s_cluster: K8sCluster, token: str) -> Any:
    """An ApiClient that authenticates as the chart's gateway ServiceAccount, not as the test's admin."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = k8s_cluster.server
    configuration.ssl_ca_cert = str(k8s_cluster.ca_file)
    configuration.api_key = {"authorization": token, "BearerToken": token}  # < 36 and 36+ clients
    configuration.api_key_prefix = {"authorization": "Bearer", "BearerToken": "Bearer"}
    return client.ApiClient(configuration)


@pytest.fixture
def chart_gateway(
    tmp_path: Path, k8s_cluster: K8sCluster, chart_identity: ChartIdentity
) -> Iterator[tuple[Gateway, ChartIdentity]]:
    if not k8s_cluster.local:
        pytest.skip("needs the local control plane's CA and server to build a ServiceAccount client")
    for gw in build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "gw"):
        state = gw.client.app.state.nexa  # type: ignore[attr-defined]
        state.backend = KubernetesJobBackend(
            state,
            namespace_prefix=chart_identity.prefix,
            api_client=_as_gateway(k8s_cluster, chart_identity.token),
            s3_secret=chart_identity.s3_secret,
            home_namespace=chart_identity.namespace,
        )
        yield gw, chart_identity


def test_the_chart_rights_suffice_and_the_s3_secret_follows_the_tenant(
    chart_gateway: tuple[Gateway, ChartIdentity], k8s_cluster: K8sCluster
) -> None:
    from kubernetes import client

    gw, ident = chart_gateway
    job = gw.submit_audit()
    tenant_ns = tenant_namespace(ident.prefix, tenant_of(gw))
    with k8s_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        source = core.read_namespaced_secret(ident.s3_secret, ident.namespace)
        copy = core.read_namespaced_secret(ident.s3_secret, tenant_ns)
        assert copy.data == source.data
        assert copy.metadata.labels["app.kubernetes.io/managed-by"] == "nexa-gateway"

        # Every other route the backend serves works with the chart's rights alone.
        assert gw.client.get(f"/v1/jobs/{job['job_id']}", headers=gw.auth()).status_code == 200
        listed = gw.client.get("/v1/jobs", headers=gw.auth()).json()["items"]
        assert [j["job_id"] for j in listed] == [job["job_id"]]
        logs = gw.client.get(f"/v1/jobs/{job['job_id']}/logs?follow=false", headers=gw.auth())
        assert logs.status_code == 200, logs.text
        cancelled = gw.client.post(f"/v1/jobs/{job['job_id']}/cancel", headers=gw.auth())
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

        # Rotated credentials reach the copy the next time the namespace is ensured.
        core.patch_namespaced_secret(
            ident.s3_secret, ident.namespace, {"data": _secret_data({"NEXA_S3_SECRET_KEY": "sk-2"})}
        )
        gw.client.app.state.nexa.backend._namespaces.clear()  # type: ignore[attr-defined]
        gw.submit_audit()
        rotated = core.read_namespaced_secret(ident.s3_secret, tenant_ns).data
        assert base64.b64decode(rotated["NEXA_S3_SECRET_KEY"]) == b"sk-2"
        assert rotated == core.read_namespaced_secret(ident.s3_secret, ident.namespace).data


def test_the_chart_keeps_the_gateway_inside_its_prefix(
    chart_identity: ChartIdentity, k8s_cluster: K8sCluster
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    if not k8s_cluster.local:
        pytest.skip("needs the local control plane's CA and server to build a ServiceAccount client")
    outside = k8s_cluster.create_namespace()
    body = {"metadata": {"name": chart_identity.s3_secret}, "data": _secret_data({"k": "v"})}
    with _as_gateway(k8s_cluster, chart_identity.token) as api, k8s_cluster.api_client() as admin:
        core, admin_core = client.CoreV1Api(api), client.CoreV1Api(admin)

        def denied_outside() -> str | None:
            # A policy takes a moment to be enforced after it is created: retry until it is.
            try:
                core.create_namespaced_secret(outside, body)
            except ApiException as exc:
                return str(exc.body) if exc.status in (403, 422) else None
            admin_core.delete_namespaced_secret(chart_identity.s3_secret, outside)
            return None

        reason = wait_for("the admission policy to refuse a Secret outside the prefix", denied_outside, 30)
        assert "ValidatingAdmissionPolicy" in reason, reason
        with pytest.raises(ApiException) as other_name:
            core.create_namespace({"metadata": {"name": f"not-{chart_identity.prefix}x"}})
        assert other_name.value.status in (403, 422)
        inside = f"{chart_identity.prefix}someone"
        core.create_namespace({"metadata": {"name": inside}})
        with pytest.raises(ApiException) as other_secret:
            core.create_namespaced_secret(inside, {"metadata": {"name": "anything-else"}})
        assert other_secret.value.status in (403, 422)
        # Create and overwrite, but never read a copy back: RBAC refuses the get.
        core.create_namespaced_secret(inside, body)
        with pytest.raises(ApiException) as read_back:
            core.read_namespaced_secret(chart_identity.s3_secret, inside)
        assert read_back.value.status == 403
