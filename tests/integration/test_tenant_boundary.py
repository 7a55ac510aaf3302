"""The tenant boundary at submit and at run, probed as an attacker would.

Tenant A owns a dataset, a checkpoint and a deployment. Tenant B (no grants) and
tenant C (granted the very directory that holds the artifact store, the worst
case an operator can configure) try to reach them through every input field of
every job type, in every reference form. The gateway refuses each at submit; the
worker, handed a forged claim that skipped the gateway, refuses each again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nexa.contracts import ClaimedJob, JobType, spec_for
from nexa.contracts.refs import job_references
from nexa.ids import new_id
from nexa_engines.engine import EngineContext
from nexa_gateway.db import Artifact
from nexa_gateway.services import grants
from nexa_store.access import AccessDenied, check_reference
from nexa_store.local import LocalArtifactStore
from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    yield from build_gateway(
        f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "root", bootstrap_grant_local_roots=True
    )


class World:
    """Tenant A's artifacts and the keys of A, B (nothing granted) and C (granted the store's parent)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        state = gw.client.app.state.nexa  # type: ignore[attr-defined]
        self.state = state
        self.store: LocalArtifactStore = state.store
        self.key_b = gw.new_tenant_key("tenant-b")
        self.key_c = gw.new_tenant_key("tenant-c")
        with state.db.session() as session:
            self.tenant_a = self._tenant_of(gw.key)
            tenant_c = self._tenant_of(self.key_c)
            grants.grant(session, state.settings, tenant_c, "local_root", str(gw.root))
        uploaded = gw.client.post(
            "/v1/datasets",
            files={"file": ("secret.jsonl", b'{"text": "tenant A secret row"}\n', "application/json")},
            headers=gw.auth(),
        )
        assert uploaded.status_code == 201, uploaded.text
        self.ds = uploaded.json()["dataset_id"]
        self.ckpt = self._register("checkpoint", new_id("ckpt"), {"config.json": "{}"})
        self.dp = self._register("deployment", new_id("dp"), {"deployment.json": "{}"})
        # Tenant C's own bait: a directory inside its granted root that links into the store.
        self.links = gw.root / "links"
        self.links.mkdir()
        (self.links / "ds.jsonl").symlink_to(self.store.artifact_dir(self.ds) / "data.jsonl")
        (self.links / "ckpt").symlink_to(self.store.artifact_dir(self.ckpt))

    def _tenant_of(self, key: str) -> str:
        principal = self.state.keys.resolve(self.state.db, key)
        assert principal is not None
        return str(principal.tenant_id)

    def _register(self, kind: str, artifact_id: str, files: dict[str, str]) -> str:
        with self.store.begin(kind, artifact_id) as writer:
            for name, text in files.items():
                (writer.path / name).write_text(text)
            writer.commit(tenant_id=self.tenant_a)
        with self.state.db.session() as session:
            session.add(Artifact(id=artifact_id, tenant_id=self.tenant_a, kind=kind, uri="", name=kind))
        return artifact_id

    def forms(self, kind: str) -> list[str]:
        """Every way to name tenant A's input of ``kind``."""
        target = {"dataset": self.ds, "checkpoint": self.ckpt, "model": self.ckpt, "teacher": self.ckpt}[kind]
        store_dir = self.store.artifact_dir(target)
        data = store_dir / "data.jsonl" if kind == "dataset" else store_dir
        rel = os.path.relpath(data, Path.cwd())
        forms = [target, f"internal://{target}", str(data), f"file://{data}", rel]
        if kind == "dataset":
            forms += [
                str(self.gw.root),  # a parent directory of the whole store
                str(self.store.root),
                str(self.links / "ds.jsonl"),  # a symlink into the store
                str(self.links),  # a directory whose entry links into the store
                f"s3://{self.store.root.name}/datasets/{self.ds}/data.jsonl",
                "internal://" + str(data),
            ]
        else:
            forms += [str(self.links / "ckpt"), str(self.gw.root)]
        if kind == "teacher":
            forms += [self.dp, f"internal://{self.dp}"]
        return forms


# (job type, field, kind, the rest of a valid request)
FIELDS: list[tuple[JobType, str, str, dict[str, Any]]] = [
    (JobType.audit, "dataset_uri", "dataset", {}),
    (JobType.distill, "dataset_id", "dataset", {"teacher": "openai/gpt-4o-mini"}),
    (JobType.distill, "teacher", "teacher", {"dataset_id": "{own_ds}"}),
    (JobType.generate, "teacher", "teacher", {"domain": "law"}),
    (JobType.train, "dataset_id", "dataset", {"model": "gpt2"}),
    (JobType.train, "model", "model", {"dataset_id": "{own_ds}"}),
    (JobType.train, "warm_start_checkpoint_id", "checkpoint", {"dataset_id": "{own_ds}", "model": "gpt2"}),
    (JobType.evaluate, "checkpoint_id", "checkpoint", {}),
    (JobType.evaluate, "dataset_id", "dataset", {"checkpoint_id": "{own_ckpt}"}),
    (JobType.deploy, "checkpoint_id", "checkpoint", {}),
]


def _own_dataset(gw: Gateway, key: str) -> str:
    r = gw.client.post(
        "/v1/datasets",
        files={"file": ("own.jsonl", b'{"text": "mine"}\n', "application/json")},
        headers=gw.auth(key),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["dataset_id"])


def test_every_field_refuses_every_form_of_another_tenants_input(gw: Gateway) -> None:
    world = World(gw)
    covered: set[tuple[str, str]] = set()
    for attacker in (world.key_b, world.key_c):
        own = {"{own_ds}": _own_dataset(gw, attacker), "{own_ckpt}": world.ckpt}
        for job_type, field, kind, rest in FIELDS:
            covered.add((job_type.value, field))
            for form in world.forms(kind):
                body = {k: own.get(v, v) for k, v in rest.items()}
                if job_type is JobType.evaluate and field == "dataset_id":
                    continue  # needs an own checkpoint; the checkpoint fields cover evaluate
                body[field] = form
                r = gw.client.post(f"/v1/{job_type.value}", json=body, headers=gw.auth(attacker))
                assert r.status_code == 422, (job_type, field, form, r.text)
                error = r.json()["error"]
                assert error["field"] == field or error["type"] == "validation_error", (form, error)
                # The answer may echo the attacker's own input, and must say nothing more.
                told = error["message"].replace(form, "")
                assert "tenant A secret" not in told and str(world.store.root) not in told, told
    # Every reference field of every job type is in the matrix.
    listed = {
        (t.value, r.field.split(".")[0])
        for t, payload in _one_of_each(world).items()
        for r in job_references(spec_for(t, payload))
        if r.kind != "url"
    }
    assert listed <= covered


def _one_of_each(world: World) -> dict[JobType, dict[str, Any]]:
    return {
        JobType.audit: {"dataset_uri": world.ds},
        JobType.distill: {"dataset_id": world.ds, "teacher": world.dp},
        JobType.generate: {"domain": "x", "teacher": world.ckpt},
        JobType.train: {"dataset_id": world.ds, "model": world.ckpt, "warm_start_checkpoint_id": world.ckpt},
        JobType.evaluate: {"checkpoint_id": world.ckpt, "dataset_id": world.ds},
        JobType.deploy: {"checkpoint_id": world.ckpt},
    }


def test_the_owner_is_accepted_and_responses_reveal_no_server_path(gw: Gateway) -> None:
    world = World(gw)
    for job_type, payload in _one_of_each(world).items():
        r = gw.client.post(f"/v1/{job_type.value}", json=payload, headers=gw.auth())
        assert r.status_code in (200, 201), (job_type, r.text)
    for route in (f"/v1/datasets/{world.ds}", "/v1/datasets", f"/v1/artifacts/{world.ds}"):
        r = gw.client.get(route, headers=gw.auth())
        assert r.status_code == 200, r.text
        assert str(world.store.root) not in r.text and str(gw.root) not in r.text, route
    assert (
        gw.client.get(f"/v1/datasets/{world.ds}", headers=gw.auth()).json()["uri"] == f"internal://{world.ds}"
    )


def test_local_paths_are_opt_in_per_tenant(gw: Gateway) -> None:
    world = World(gw)
    mine = gw.dataset_file("b-own.jsonl")
    r = gw.client.post("/v1/audit", json={"dataset_uri": str(mine)}, headers=gw.auth(world.key_b))
    assert r.status_code == 422 and r.json()["error"]["type"] == "dataset_not_allowed", r.text
    assert "not enabled for this tenant" in r.json()["error"]["message"]
    # The bootstrap tenant (nexa up's) and a granted tenant read the same file.
    for key in (gw.key, world.key_c):
        r = gw.client.post("/v1/audit", json={"dataset_uri": str(mine)}, headers=gw.auth(key))
        assert r.status_code == 201, r.text


def test_a_forged_claim_is_refused_by_the_worker(gw: Gateway, tmp_path: Path) -> None:
    """The worker checks every reference against the manifests, whatever the claim says."""
    world = World(gw)
    tenant_c = world._tenant_of(world.key_c)
    for job_type, field, kind, rest in FIELDS:
        for form in world.forms(kind):
            if kind in ("checkpoint",) and not form.startswith("ckpt_"):
                continue  # not a valid request at all: the contract refuses it before any resolver
            payload = {
                k: v.replace("{own_ds}", world.ds).replace("{own_ckpt}", world.ckpt) for k, v in rest.items()
            }
            payload[field] = form
            try:
                spec = spec_for(job_type, payload)
            except ValueError:
                continue
            claim = ClaimedJob(
                job_id=new_id("job"),
                job_type=job_type,
                attempt=1,
                lease_expires_at="2030-01-01T00:00:00Z",  # type: ignore[arg-type]
                spec=json.loads(spec.model_dump_json()),
                tenant_id=tenant_c,
                artifacts_uri=world.store.root_uri,
                local_roots=[str(gw.root)],  # forged: grants as wide as the whole machine's data
            )
            ctx = EngineContext(
                job_id=claim.job_id,
                attempt=1,
                tenant_id=claim.tenant_id,
                store=world.store,
                reporter=None,  # type: ignore[arg-type]
                workdir=tmp_path / "work",
                allowed_roots=[Path(r) for r in claim.local_roots],
            )
            refs = [r for r in job_references(spec) if r.field == field]
            assert refs, (job_type, field)
            with pytest.raises(AccessDenied):
                check_reference(ctx.access, world.store, refs[0])
