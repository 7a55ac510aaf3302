"""Node tokens: a tenant's own machines register with one, belong to it, and run only its jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    yield from build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "root")


def _register(gw: Gateway, secret: str) -> Any:
    return gw.client.post(
        "/v1/workers/register", json={"name": "node"}, headers={"Authorization": f"Bearer {secret}"}
    )


def _upload_and_audit(gw: Gateway, key: str) -> str:
    up = gw.client.post(
        "/v1/datasets",
        files={"file": ("d.jsonl", b'{"text": "x"}\n', "application/json")},
        headers=gw.auth(key),
    )
    r = gw.client.post("/v1/audit", json={"dataset_uri": up.json()["dataset_id"]}, headers=gw.auth(key))
    assert r.status_code == 201, r.text
    return str(r.json()["job_id"])


def test_a_tenants_node_runs_only_that_tenants_jobs(gw: Gateway) -> None:
    acme = gw.new_tenant_key("acme")  # an admin key of tenant acme
    other = gw.new_tenant_key("other")
    made = gw.client.post("/v1/nodes/tokens", json={"name": "acme-gpu-box"}, headers=gw.auth(acme))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("nexan_") and token not in str(
        gw.client.get("/v1/nodes/tokens", headers=gw.auth(acme)).json()
    )

    others_job = _upload_and_audit(gw, other)
    acme_job = _upload_and_audit(gw, acme)
    node = _register(gw, token)
    assert node.status_code == 201, node.text
    node_auth = {"Authorization": f"Bearer {node.json()['token']}"}
    claimed = gw.claim(node_auth)
    assert claimed is not None and claimed["job_id"] == acme_job
    assert gw.claim(node_auth) is None  # the other tenant's job is never handed to acme's node
    platform = gw.register_worker()  # the shared secret: the platform's own worker runs anyone's job
    platform_claim = gw.claim(platform)
    assert platform_claim is not None and platform_claim["job_id"] == others_job


def test_members_cannot_make_node_tokens_and_revoking_cuts_nodes_off(gw: Gateway) -> None:
    created = gw.client.post("/v1/keys", json={"name": "m"}, headers=gw.auth()).json()  # a member key
    r = gw.client.post("/v1/nodes/tokens", json={}, headers=gw.auth(created["key"]))
    assert r.status_code == 403
    made = gw.client.post("/v1/nodes/tokens", json={}, headers=gw.auth()).json()
    node = _register(gw, made["token"])
    node_auth = {"Authorization": f"Bearer {node.json()['token']}"}
    assert gw.client.post("/v1/workers/heartbeat", headers=node_auth).status_code == 204

    revoked = gw.client.delete(f"/v1/nodes/tokens/{made['token_id']}", headers=gw.auth())
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert _register(gw, made["token"]).status_code == 401
    assert gw.client.post("/v1/workers/heartbeat", headers=node_auth).status_code == 401
    assert gw.client.post("/v1/workers/claim", json={}, headers=node_auth).status_code == 401
    assert _register(gw, "nexan_made-up").status_code == 401
    assert _register(gw, gw.key).status_code == 401  # a user key is no node credential


def test_the_registry_shows_each_tenant_its_own_nodes_and_the_admin_the_fleet(gw: Gateway) -> None:
    acme, other = gw.new_tenant_key("acme"), gw.new_tenant_key("other")
    token = gw.client.post("/v1/nodes/tokens", json={"name": "acme-box"}, headers=gw.auth(acme)).json()[
        "token"
    ]
    node = _register(gw, token).json()
    node_auth = {"Authorization": f"Bearer {node['token']}"}
    platform = gw.register_worker(cpu_count=8, memory_gb=32, tier="cpu")
    job = _upload_and_audit(gw, acme)
    assert (gw.claim(node_auth) or {}).get("job_id") == job

    mine = gw.client.get("/v1/workers", headers=gw.auth(acme)).json()["items"]
    assert [(w["worker_id"], w["state"], w["running_jobs"]) for w in mine] == [
        (node["worker_id"], "busy", [job])
    ]
    assert mine[0]["owner_tenant_id"] and mine[0]["tier"] == "cpu"
    assert gw.client.get("/v1/workers", headers=gw.auth(other)).json()["items"] == []
    # Another tenant's node reads as not found; Forge's path lists the same.
    assert gw.client.get(f"/v1/workers/{node['worker_id']}", headers=gw.auth(other)).status_code == 404
    assert gw.client.get("/api/workers/", headers=gw.auth(acme)).json()["items"] == mine
    fleet = gw.client.get("/v1/workers", headers=gw.auth()).json()["items"]  # the platform admin
    assert {w["worker_id"]: w["state"] for w in fleet} == {
        node["worker_id"]: "busy",
        fleet[1]["worker_id"]: "idle",
    }
    assert fleet[1]["hardware"]["memory_gb"] == 32 and fleet[1]["owner_tenant_id"] is None
    # A node silent for three leases is lost.
    from datetime import timedelta

    from sqlalchemy import update

    from nexa_gateway.db import Worker, utcnow

    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        session.execute(
            update(Worker)
            .where(Worker.id == fleet[1]["worker_id"])
            .values(last_seen_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    assert gw.client.get(f"/v1/workers/{fleet[1]['worker_id']}", headers=gw.auth()).json()["state"] == "lost"
    assert platform  # registered with the shared secret: the platform's own
