"""Cluster mode without storage keys in engine pods: the operator's attempt token, honoured by the gateway.

A real gateway (uvicorn on loopback) runs on the cluster backend against the test
control plane. A job submitted through it becomes a NexaJob; the test plays the
operator's part (the NexaJob's status, the pod's env from the operator's own
builder) and then runs the engine entry point in-process with exactly that env:
no S3 keys, no artifact root, only the gateway URL and the attempt token.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexa.attempttokens import ATTEMPT_TOKEN_ENV, mint
from nexa.contracts.nexajob import (
    GROUP,
    NEXAJOB_PLURAL,
    VERSION,
    resource_name,
    run_result_key,
    tenant_namespace,
)
from nexa_operator import builders
from nexa_operator.config import OperatorConfig
from nexa_operator.results import ResultReader
from tests.fixtures.k8s import K8sCluster
from tests.fixtures.loopback_server import serving
from tests.integration.operator_helpers import install_crds

pytest.importorskip("kubernetes")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECRET = "attempt-token-secret-for-this-test"


@dataclass
class ClusterGateway:
    url: str
    key: str
    state: Any
    prefix: str
    artifacts: Path

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@pytest.fixture
def gateway(tmp_path: Path, k8s_cluster: K8sCluster) -> Iterator[ClusterGateway]:

    from nexa_gateway.backends.kubernetes import KubernetesJobBackend
    from nexa_gateway.main import create_app
    from nexa_gateway.services.keys import generate_api_key
    from nexa_gateway.settings import Settings

    install_crds(k8s_cluster)
    prefix = f"nx{uuid.uuid4().hex[:6]}-"
    key = generate_api_key()
    app = create_app(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'nexa.db'}",
            artifact_root=tmp_path / "artifacts",
            worker_secret="s",
            bootstrap_api_key=key,
            attempt_token_secret=SECRET,
            platform_signing_key=secrets.token_hex(32),
            allowed_dataset_roots=[tmp_path],
        )
    )
    with serving(app) as url:
        state = app.state.nexa
        state.backend = KubernetesJobBackend(
            state, namespace_prefix=prefix, api_client=k8s_cluster.api_client()
        )
        yield ClusterGateway(url, key, state, prefix, tmp_path / "artifacts")


def _upload(gw: ClusterGateway, path: Path, key: str | None = None) -> str:
    with path.open("rb") as f:
        r = httpx.post(f"{gw.url}/v1/datasets", files={"file": (path.name, f)}, headers=gw.auth(key))
    assert r.status_code == 201, r.text
    return str(r.json()["dataset_id"])


def _set_status(k8s_cluster: K8sCluster, namespace: str, name: str, **status: Any) -> None:
    from kubernetes import client

    with k8s_cluster.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, NEXAJOB_PLURAL, name, {"status": status}
        )


def test_an_engine_pod_reaches_its_tenants_artifacts_through_the_gateway_only(
    gateway: ClusterGateway, k8s_cluster: K8sCluster, tmp_path: Path
) -> None:
    from kubernetes import client

    from nexa_engines import run_one
    from nexa_gateway.routes import worker_store

    gw = gateway
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i} says something new"}) + "\n" for i in range(40)))
    dataset = _upload(gw, rows)
    from nexa_gateway.services.keys import create_api_key

    with gw.state.db.session() as session:
        other_key = create_api_key(session, tenant_name="someone-else").key
    foreign = _upload(gw, rows, other_key)

    submitted = httpx.post(f"{gw.url}/v1/audit", json={"dataset_uri": dataset}, headers=gw.auth())
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]
    tenant = submitted.json()["user_id"]
    namespace, name = tenant_namespace(gw.prefix, tenant), resource_name(job_id)
    # The operator's part: attempt 1 is running, and its pod is what the builder makes.
    _set_status(k8s_cluster, namespace, name, phase="Running", attempts=1)
    with k8s_cluster.api_client() as api:
        nexajob = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, NEXAJOB_PLURAL, name
        )
    config = OperatorConfig.from_env(
        {
            "NEXA_OPERATOR_GATEWAY_URL": gw.url,
            "NEXA_OPERATOR_ATTEMPT_TOKEN_SECRET": SECRET,
            "NEXA_OPERATOR_GATEWAY_NAMESPACE_PREFIX": gw.prefix,
            "NEXA_S3_ENDPOINT": "minio.invalid:9000",
            "NEXA_S3_BUCKET": "nexa",
        }
    )
    pod = builders.build_job(nexajob, 1, config)["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in pod["env"] if "valueFrom" in e]
    env = {e["name"]: e["value"] for e in pod["env"]}
    assert not {n for n in env if n.startswith("NEXA_S3_")}
    env["NEXA_WORKDIR"] = str(tmp_path / "pod-work")
    env["NEXA_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    args = pod["args"]
    spec_json = args[args.index("--spec-json") + 1]
    token = env[ATTEMPT_TOKEN_ENV]

    # The pod names another tenant's dataset: the gateway says it does not exist.
    sneaky = json.dumps({**json.loads(spec_json), "dataset_uri": foreign})
    assert run_one.run("audit", sneaky, job_id, 1, tenant, env=env) != 0
    failure = json.loads((tmp_path / "termination-log").read_text())
    assert failure["error"]["code"] == "dataset_not_found", failure

    assert run_one.run("audit", spec_json, job_id, 1, tenant, env=env) == 0
    found = ResultReader({"NEXA_ARTIFACT_ROOT": str(gw.artifacts)}).read(job_id, 1)
    assert found.state == "found", found
    scored = str(found.result["dataset_id"])  # type: ignore[index]
    manifest = gw.state.store.read_manifest(scored)
    # The gateway, not the pod, stamped the manifest.
    assert (manifest.job_id, manifest.attempt, manifest.tenant_id) == (job_id, 1, tenant)

    store = f"{gw.url}/v1/workers/jobs/{job_id}/store"
    bearer = {"Authorization": f"Bearer {token}"}

    def manifest_status(artifact: str, headers: dict[str, str], attempt: int = 1) -> int:
        return httpx.get(
            f"{store}/artifacts/{artifact}/manifest", params={"attempt": attempt}, headers=headers
        ).status_code

    assert manifest_status(dataset, bearer) == 200
    assert manifest_status(foreign, bearer) == 404  # another tenant's: not found, never forbidden
    forged = mint(b"not the shared secret", job_id, 1, tenant)
    assert manifest_status(dataset, {"Authorization": f"Bearer {forged}"}) == 401
    other_job = mint(SECRET.encode(), job_id, 1, "tnt_someoneelse")
    assert manifest_status(dataset, {"Authorization": f"Bearer {other_job}"}) == 404
    assert manifest_status(dataset, bearer, attempt=2) == 409

    # The gateway accepted what the pod's result record listed, as it does a worker's report:
    # registered for the tenant (listed, downloadable) and countersigned with the platform key.
    assert manifest.signature is not None
    gw.state.trust.check(manifest)
    assert httpx.get(f"{gw.url}/v1/artifacts/{scored}", headers=gw.auth()).status_code == 200
    assert httpx.get(f"{gw.url}/v1/artifacts/{scored}", headers=gw.auth(other_key)).status_code == 404

    # Cluster mode meters as standalone does: the pod's record carried its usage, which the
    # gateway recorded with the artifacts, once per attempt and kind, priced like a worker's.
    def billed() -> dict[str, Any]:
        response = httpx.get(f"{gw.url}/v1/billing/summary", headers=gw.auth())
        assert response.status_code == 200, response.text
        return dict(response.json())

    bill = billed()
    assert bill["usage"] == {"rows": "40"}, bill
    assert [(j["job_id"], j["job_type"]) for j in bill["by_job"]] == [(job_id, "audit")]
    assert bill["total"] == "0.008"  # 40 rows at the SPEC's $0.20 per 1,000
    record = (gw.artifacts / run_result_key(job_id, 1)).read_bytes()
    again = httpx.put(f"{store}/runs/result.json", params={"attempt": 1}, content=record, headers=bearer)
    assert again.status_code == 204, again.text
    assert billed()["total"] == "0.008"  # the same record again: no second charge
    other_bill = httpx.get(f"{gw.url}/v1/billing/summary", headers=gw.auth(other_key)).json()
    assert other_bill["usage"] == {} and other_bill["total"] == "0.00"

    # Something written into the store behind the platform's back, in the tenant's name, is no input,
    # and a result record cannot make the gateway accept it.
    from nexa.ids import new_id
    from nexa_store import LocalArtifactStore

    planted = new_id("ds")
    with LocalArtifactStore(gw.artifacts).begin("dataset", planted) as writer:
        (writer.path / "data.jsonl").write_text('{"text": "planted"}\n')
        writer.commit(tenant_id=tenant, job_id=new_id("job"), attempt=1)
    refused = httpx.get(f"{store}/artifacts/{planted}/manifest", params={"attempt": 1}, headers=bearer)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "artifact_unsigned"
    forged_record = json.dumps({"job_id": job_id, "attempt": 1, "result": {}, "artifacts": [planted]})
    smuggled = httpx.put(
        f"{store}/runs/result.json", params={"attempt": 1}, content=forged_record.encode(), headers=bearer
    )
    assert smuggled.status_code == 422 and smuggled.json()["error"]["type"] == "artifact_foreign"
    assert httpx.get(f"{gw.url}/v1/artifacts/{planted}", headers=gw.auth()).status_code == 404

    # Attempt 2 starts: attempt 1's token opens nothing any more, for reads, writes and records.
    _set_status(k8s_cluster, namespace, name, phase="Running", attempts=2)
    worker_store._live.clear()  # the gateway trusts a liveness answer for 3 s; the test skips the wait
    assert manifest_status(dataset, bearer) == 409
    late = httpx.put(f"{store}/runs/result.json", params={"attempt": 1}, content=b"{}", headers=bearer)
    assert late.status_code == 409
    # And once the job has ended, the current attempt's token is refused too.
    second = {"Authorization": f"Bearer {mint(SECRET.encode(), job_id, 2, tenant)}"}
    assert manifest_status(dataset, second, attempt=2) == 200
    _set_status(k8s_cluster, namespace, name, phase="Completed", attempts=2)
    worker_store._live.clear()
    assert manifest_status(dataset, second, attempt=2) == 409
