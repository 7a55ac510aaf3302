"""Tenants' nodes reach the artifact store through the gateway, scoped by the attempt they run.

The gateway app is real (database, local store); the worker side is the real
``GatewayArtifactStore`` over the app's test client, so both halves of the
protocol are exercised together.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexa import NexaClient
from nexa.contracts import InputSource
from nexa.ids import new_id
from nexa_engines.gateway_store import GatewayArtifactStore
from nexa_engines.sample_data import generate_sft_dataset
from nexa_store import ArtifactNotFound, LocalArtifactStore
from nexa_store.base import ArtifactError, IntegrityError, StoreUnavailable
from tests.fixtures.gateway_proc import GatewayFactory, WorkerFactory
from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    yield from build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "root")


class ClientTransport:
    """``WorkerClient.store_call`` over the in-process app, with the worker's token."""

    def __init__(self, gw: Gateway, auth: dict[str, str]) -> None:
        self.gw = gw
        self.auth = auth

    def store_call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any],
        upload: Path | None = None,
        download: Path | None = None,
    ) -> httpx.Response:
        content = upload.read_bytes() if upload is not None else None
        response = self.gw.client.request(method, path, params=params, content=content, headers=self.auth)
        if download is not None and response.status_code == 200:
            download.write_bytes(response.content)
        return response


def _node(gw: Gateway, key: str) -> dict[str, str]:
    token = gw.client.post("/v1/nodes/tokens", json={"name": "box"}, headers=gw.auth(key)).json()["token"]
    r = gw.client.post(
        "/v1/workers/register", json={"name": "box"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["artifact_store"] == {"kind": "gateway"}  # no root, no bucket, no endpoint
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _upload(gw: Gateway, key: str, text: str = "x") -> str:
    r = gw.client.post(
        "/v1/datasets",
        files={"file": ("d.jsonl", f'{{"text": "{text}"}}\n'.encode(), "application/json")},
        headers=gw.auth(key),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["dataset_id"])


def _claimed_store(gw: Gateway, tmp_path: Path) -> tuple[GatewayArtifactStore, dict[str, Any], str, str]:
    """acme's node holding acme's audit, and the store it would run with; plus a dataset of another tenant."""
    acme = gw.new_tenant_key("acme")
    other = gw.new_tenant_key("other")
    others_ds = _upload(gw, other, "secret of other")
    acme_ds = _upload(gw, acme, "acme row")
    r = gw.client.post("/v1/audit", json={"dataset_uri": acme_ds}, headers=gw.auth(acme))
    assert r.status_code == 201, r.text
    node = _node(gw, acme)
    claimed = gw.claim(node)
    assert claimed is not None
    store = GatewayArtifactStore(
        ClientTransport(gw, node), claimed["job_id"], claimed["attempt"], tmp_path / "s"
    )
    return store, claimed, acme_ds, others_ds


def test_a_node_reads_its_tenants_artifacts_and_nothing_else(gw: Gateway, tmp_path: Path) -> None:
    store, _claimed, acme_ds, others_ds = _claimed_store(gw, tmp_path)
    manifest = store.read_manifest(acme_ds, verify=True)
    assert manifest.tenant_id is not None and manifest.files
    data = store.read_file(acme_ds, manifest.files[0].path)
    assert b"acme row" in data
    copy = store.fetch(acme_ds, tmp_path / "copy")
    assert (copy / manifest.files[0].path).read_bytes() == data
    assert store.fetch(acme_ds, copy) == copy  # a verified copy is reused

    # Another tenant's artifact is "not found", exactly like one that never existed.
    for missing in (others_ds, new_id("ds")):
        assert not store.exists(missing)
        with pytest.raises(ArtifactNotFound):
            store.read_file(missing, "data.jsonl")
    assert store.list_ids("dataset") == [acme_ds]
    with pytest.raises(ArtifactError):
        store.replace_manifest(manifest)


def test_a_node_commits_new_artifacts_stamped_by_the_gateway(gw: Gateway, tmp_path: Path) -> None:
    store, claimed, acme_ds, others_ds = _claimed_store(gw, tmp_path)
    scored = new_id("ds")
    with store.begin("dataset", scored) as writer:
        (writer.path / "sub").mkdir()
        (writer.path / "sub" / "data.jsonl").write_text('{"text": "scored"}\n')
        manifest = writer.commit(
            job_id="job_someone_else",  # the worker's word is not taken for these
            attempt=99,
            tenant_id="tnt_someone_else",
            inputs=[InputSource(uri=f"internal://{acme_ds}", artifact_id=acme_ds)],
            metrics={"num_rows": 1},
        )
    assert (manifest.job_id, manifest.attempt) == (claimed["job_id"], claimed["attempt"])
    assert manifest.tenant_id == claimed["tenant_id"] and manifest.metrics == {"num_rows": 1}
    platform = LocalArtifactStore(gw.root / "artifacts")
    assert platform.read_file(scored, "sub/data.jsonl") == b'{"text": "scored"}\n'
    # The attempt completes with it: the gateway promotes (and signs) what it committed itself.
    r = gw.client.post(
        f"/v1/workers/jobs/{claimed['job_id']}/complete",
        json={"attempt": claimed["attempt"], "result": {"dataset_id": scored}, "artifacts": [scored]},
        headers=store.transport.auth,  # type: ignore[attr-defined]
    )
    assert r.status_code == 204, r.text
    # Once the attempt is over its store is closed: nothing more is read or written with it.
    with pytest.raises(StoreUnavailable, match="no longer holds"):
        store.list_ids("dataset")
    with pytest.raises(StoreUnavailable):
        with store.begin("dataset", new_id("ds")) as late:
            (late.path / "data.jsonl").write_text("late\n")
            late.commit()


def test_uploads_that_overwrite_escape_or_smuggle_are_refused(gw: Gateway, tmp_path: Path) -> None:
    store, claimed, _acme_ds, others_ds = _claimed_store(gw, tmp_path)
    transport: ClientTransport = store.transport  # type: ignore[assignment]
    base = f"/v1/workers/jobs/{claimed['job_id']}/store/artifacts"

    def put(artifact_id: str, members: list[tuple[tarfile.TarInfo, bytes]], kind: str = "dataset") -> Any:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
        return gw.client.put(
            f"{base}/{artifact_id}",
            params={"attempt": claimed["attempt"], "kind": kind},
            content=buffer.getvalue(),
            headers=transport.auth,
        )

    def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> Any:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
        return info, data

    commit = member(".nexa-commit.json", json.dumps({"inputs": []}).encode())
    # Someone else's artifact id: refused before anything is written, and it is left as it was.
    r = put(others_ds, [member("data.jsonl", b"overwritten\n"), commit])
    assert r.status_code == 409 and r.json()["error"]["type"] == "artifact_exists"
    assert b"secret of other" in LocalArtifactStore(gw.root / "artifacts").read_file(others_ds, "data.jsonl")
    cases = {
        "../escape.txt": [member("../escape.txt"), commit],
        "absolute": [member("/etc/evil"), commit],
        "symlink": [member("link", kind=tarfile.SYMTYPE, link="/etc/passwd"), commit],
        "hardlink": [member("hard", kind=tarfile.LNKTYPE, link="data.jsonl"), commit],
        "own manifest": [member("manifest.json", b"{}"), commit],
        "no commit": [member("data.jsonl")],
        "bad commit": [member("data.jsonl"), member(".nexa-commit.json", b"[1]")],
    }
    for name, members in cases.items():
        r = put(new_id("ds"), members)
        assert r.status_code == 422, (name, r.text)
        assert r.json()["error"]["type"] == "invalid_upload", name
    assert not (gw.root / "escape.txt").exists() and not (gw.root / "artifacts" / "escape.txt").exists()
    r = put(new_id("ckpt"), [member("data.jsonl"), commit], kind="dataset")
    assert r.status_code == 422 and r.json()["error"]["type"] == "validation_error"
    # A stale attempt (or another worker) can neither read nor write.
    stale = {"attempt": claimed["attempt"] + 1, "kind": "dataset"}
    r = gw.client.get(base, params=stale, headers=transport.auth)
    assert r.status_code == 409 and r.json()["error"]["type"] == "stale_attempt"
    platform_worker = gw.register_worker()
    r = gw.client.get(f"{base}?kind=dataset&attempt={claimed['attempt']}", headers=platform_worker)
    assert r.status_code == 409
    r = gw.client.get(f"{base}?kind=dataset&attempt={claimed['attempt']}", headers=gw.auth())
    assert r.status_code == 401  # a user key is no worker credential


def test_tampered_bytes_are_caught_by_the_worker(gw: Gateway, tmp_path: Path) -> None:
    store, _claimed, acme_ds, _others = _claimed_store(gw, tmp_path)
    manifest = store.read_manifest(acme_ds, verify=False)
    stored = gw.root / "artifacts" / "datasets" / acme_ds / manifest.files[0].path
    assert stored.is_file()
    stored.write_bytes(stored.read_bytes().replace(b"acme", b"evil"))
    with pytest.raises(IntegrityError):
        store.read_file(acme_ds, manifest.files[0].path)


def test_nodes_on_the_gateway_store_are_not_handed_deployments(gw: Gateway, tmp_path: Path) -> None:
    # A server outlives the job that starts it, and the job's lease is what scopes a node's store.
    store, claimed, _acme_ds, _others = _claimed_store(gw, tmp_path)
    checkpoint = new_id("ckpt")
    with store.begin("checkpoint", checkpoint) as writer:
        (writer.path / "config.json").write_text("{}")
        writer.commit()
    node: dict[str, str] = store.transport.auth  # type: ignore[attr-defined]
    r = gw.client.post(
        f"/v1/workers/jobs/{claimed['job_id']}/complete",
        json={"attempt": claimed["attempt"], "result": {}, "artifacts": [checkpoint]},
        headers=node,
    )
    assert r.status_code == 204, r.text
    acme = gw.new_tenant_key("acme")
    r = gw.client.post("/v1/deploy", json={"checkpoint_id": checkpoint}, headers=gw.auth(acme))
    assert r.status_code == 201, r.text
    assert gw.claim(node) is None
    taken = gw.claim(gw.register_worker())
    assert taken is not None and taken["job_type"] == "deploy"


def test_an_audit_runs_end_to_end_on_a_node_without_store_access(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    gw = gateway_factory()
    made = httpx.post(f"{gw.url}/v1/nodes/tokens", json={"name": "laptop"}, headers=gw.headers(), timeout=10)
    assert made.status_code == 201, made.text
    # The node process gets its node token and nothing else: no store root, bucket or keys.
    worker_factory(gw, "laptop", extra_env={"NEXA_WORKER_SECRET": made.json()["token"]})
    generate_sft_dataset(tmp_path / "sft.parquet", num_rows=300, seed=5)
    client = NexaClient(api_key=gw.api_key, base_url=gw.url)
    uploaded = client.upload_dataset(tmp_path / "sft.parquet")
    job = client.audit(dataset_uri=uploaded.dataset_id)
    finished = client.wait(job["job_id"], timeout=180, poll_interval=0.2)
    assert finished.status == "completed", finished.error
    scored = (finished.result or {})["dataset_id"]
    manifest = client.get_artifact(scored).manifest
    assert manifest is not None and manifest.job_id == job["job_id"] and manifest.signature
    assert client.get_dataset(scored).num_rows == 300
    lines = [line.line for line in client.logs(job["job_id"], follow=True)]
    assert any("laptop" in line and "started audit" in line for line in lines)
