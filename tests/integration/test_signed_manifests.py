"""Platform-signed manifests: the gateway countersigns what it accepts; readers refuse anything else.

A worker commits unsigned outputs (it never holds the platform key); accepting the
attempt signs them. Rewriting a file together with its manifest hash is then
caught on download and on the worker, an unaccepted artifact is no input, and
artifacts from before signing stay readable and are listed by ``nexa store verify``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nexa.cli.main import app as cli
from nexa.contracts.refs import JobReference
from nexa.ids import new_id
from nexa_engines.engine import EngineContext
from nexa_gateway.db import Artifact
from nexa_store.access import AccessDenied, check_reference
from nexa_store.local import LocalArtifactStore
from nexa_store.signing import PlatformTrust
from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    yield from build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "root")


def _accepted_output(gw: Gateway) -> tuple[str, dict[str, str], LocalArtifactStore]:
    """An audit attempt that commits a dataset the way a worker does, and the gateway accepts it."""
    job = gw.submit_audit()
    worker = gw.register_worker()
    claimed = gw.claim(worker)
    assert claimed is not None
    store = LocalArtifactStore(gw.root / "artifacts")  # the worker's own view: no platform key
    ds = new_id("ds")
    with store.begin("dataset", ds) as writer:
        (writer.path / "data.jsonl").write_text('{"text": "accepted"}\n')
        unsigned = writer.commit(job_id=job["job_id"], attempt=1, tenant_id=claimed["tenant_id"])
    assert unsigned.signature is None
    r = gw.client.post(
        f"/v1/workers/jobs/{job['job_id']}/complete",
        json={"attempt": 1, "result": {"dataset_id": ds}, "artifacts": [ds]},
        headers=worker,
    )
    assert r.status_code == 204, r.text
    return ds, worker, store


def _worker_ctx(
    gw: Gateway, store: LocalArtifactStore, tenant_id: str, tmp_path: Path, legacy: list[str] | None = None
) -> EngineContext:
    """What a worker builds: the platform's public key from registration, legacy ids from the claim."""
    registered = gw.client.post(
        "/v1/workers/register", json={"name": "w"}, headers={"Authorization": "Bearer test-worker-secret"}
    ).json()
    trust = PlatformTrust(tuple(registered["trusted_keys"]), legacy_ids=frozenset(legacy or []))
    return EngineContext(
        job_id=new_id("job"),
        attempt=1,
        tenant_id=tenant_id,
        store=store,
        reporter=None,  # type: ignore[arg-type]
        workdir=tmp_path / "work",
        trust=trust,
    )


def test_accepted_outputs_are_countersigned_and_uploads_signed(gw: Gateway) -> None:
    ds, _, store = _accepted_output(gw)
    info = gw.client.get(f"/v1/artifacts/{ds}", headers=gw.auth()).json()
    assert info["manifest"]["signature"] and info["manifest"]["signer"]
    up = gw.client.post(
        "/v1/datasets", files={"file": ("u.jsonl", b'{"text": "u"}\n', "application/json")}, headers=gw.auth()
    ).json()
    assert store.read_manifest(up["dataset_id"]).signer == info["manifest"]["signer"]
    registered = gw.client.post(
        "/v1/workers/register", json={"name": "w"}, headers={"Authorization": "Bearer test-worker-secret"}
    ).json()
    assert registered["trusted_keys"] == [info["manifest"]["signer"]]  # workers get the public key only


def test_rewriting_data_and_its_manifest_hash_is_detected(gw: Gateway, tmp_path: Path) -> None:
    ds, _, store = _accepted_output(gw)
    directory = store.artifact_dir(ds)
    forged = b'{"text": "forged"}\n'
    (directory / "data.jsonl").write_bytes(forged)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"] = [
        {"path": "data.jsonl", "sha256": hashlib.sha256(forged).hexdigest(), "size": len(forged)}
        if f["path"] == "data.jsonl"
        else f
        for f in manifest["files"]
    ]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    for route in (f"/v1/artifacts/{ds}", f"/v1/artifacts/{ds}/files/data.jsonl"):
        r = gw.client.get(route, headers=gw.auth())
        assert r.status_code == 409 and r.json()["error"]["type"] == "artifact_corrupt", (route, r.text)
        assert "forged" not in r.text
    ctx = _worker_ctx(gw, store, manifest["tenant_id"], tmp_path)
    with pytest.raises(AccessDenied) as info:
        check_reference(ctx.access, store, JobReference("dataset_uri", "dataset", ds))
    assert info.value.code == "artifact_unsigned" and "signature does not match" in info.value.message


def test_an_artifact_the_gateway_never_accepted_is_no_input(gw: Gateway, tmp_path: Path) -> None:
    ds, _, store = _accepted_output(gw)
    tenant = store.read_manifest(ds).tenant_id
    assert tenant is not None
    rogue = new_id("ckpt")
    with store.begin("checkpoint", rogue) as writer:  # a worker writing straight into the store
        (writer.path / "config.json").write_text("{}")
        writer.commit(tenant_id=tenant)
    ctx = _worker_ctx(gw, store, tenant, tmp_path)
    check_reference(ctx.access, store, JobReference("dataset_uri", "dataset", ds))  # accepted: fine
    with pytest.raises(AccessDenied) as info:
        check_reference(ctx.access, store, JobReference("model", "model", rogue))
    assert info.value.code == "artifact_unsigned"


def test_only_the_registry_makes_an_unsigned_artifact_legacy(gw: Gateway, tmp_path: Path) -> None:
    """Registered before signing began: readable unsigned. A manifest backdated by its writer: refused."""
    ds, _, store = _accepted_output(gw)
    tenant = str(store.read_manifest(ds).tenant_id)
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    assert state.trust.since is not None
    old = new_id("ds")
    with store.begin("dataset", old) as writer:
        (writer.path / "data.jsonl").write_text('{"text": "old"}\n')
        writer.commit(tenant_id=tenant)
    with state.db.session() as session:  # what an upgraded installation's registry holds
        session.add(
            Artifact(
                id=old, tenant_id=tenant, kind="dataset", uri="", format="jsonl",
                created_at=state.trust.since - timedelta(days=30),
            )
        )  # fmt: skip
    forged = new_id("ds")
    with store.begin("dataset", forged) as writer:
        (writer.path / "data.jsonl").write_text('{"text": "forged"}\n')
        made = writer.commit(tenant_id=tenant)
    store.replace_manifest(made.model_copy(update={"created_at": datetime(2000, 1, 1, tzinfo=UTC)}))

    assert gw.client.get(f"/v1/artifacts/{old}", headers=gw.auth()).status_code == 200
    job = gw.client.post("/v1/audit", json={"dataset_uri": old}, headers=gw.auth()).json()
    claimed = gw.claim(gw.register_worker())
    assert claimed is not None and claimed["job_id"] == job["job_id"]
    assert claimed["legacy_artifacts"] == [old]
    ctx = _worker_ctx(gw, store, tenant, tmp_path, legacy=claimed["legacy_artifacts"])
    check_reference(ctx.access, store, JobReference("dataset_uri", "dataset", old))
    with pytest.raises(AccessDenied) as info:
        check_reference(ctx.access, store, JobReference("dataset_uri", "dataset", forged))
    assert info.value.code == "artifact_unsigned"

    url = f"sqlite:///{tmp_path / 'nexa.db'}"
    out = CliRunner().invoke(
        cli, ["store", "verify", "--database-url", url, "--artifact-root", str(store.root), "--json"]
    )
    assert out.exit_code == 1, out.output  # the forged one is refused
    states: dict[str, Any] = {row["artifact_id"]: row["state"] for row in json.loads(out.output)}
    assert states[ds] == "signed" and states[old] == "legacy" and states[forged] == "unsigned"


def test_a_job_resumes_from_its_own_unsigned_checkpoint_but_no_other_job_may(
    gw: Gateway, tmp_path: Path
) -> None:
    """An earlier attempt's checkpoint was never accepted, so never signed: its own job may still resume."""
    ds, _, store = _accepted_output(gw)
    tenant = str(store.read_manifest(ds).tenant_id)
    ctx = _worker_ctx(gw, store, tenant, tmp_path)
    partial = new_id("ckpt")
    with store.begin("checkpoint", partial) as writer:
        (writer.path / "config.json").write_text("{}")
        writer.commit(job_id=ctx.job_id, attempt=1, tenant_id=tenant)
    check_reference(ctx.access, store, JobReference("model", "model", partial))
    stranger = _worker_ctx(gw, store, tenant, tmp_path)
    with pytest.raises(AccessDenied) as info:
        check_reference(stranger.access, store, JobReference("model", "model", partial))
    assert info.value.code == "artifact_unsigned"
