"""Deployments through the gateway: listing with status, reading one, undeploy, and tenant isolation."""

from __future__ import annotations

import json

import pytest

from nexa.ids import new_id
from nexa_gateway.db import Artifact
from nexa_store.serving import DEPLOYMENT_FILE, mark_stopped, stop_requested
from tests.integration.gateway_app import Gateway

pytestmark = pytest.mark.integration


def _register_deployment(gw: Gateway, key: str) -> str:
    """A deployment as a deploy job leaves it: a record in the store and a row for the caller's tenant."""
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    tenant_id = gw.client.get("/v1/keys", headers=gw.auth(key)).json()[0]["tenant_id"]
    deployment_id = new_id("dp")
    record = {
        "deployment_id": deployment_id,
        "checkpoint_id": new_id("ckpt"),
        "url": "http://127.0.0.1:9",
        "openai_base_url": "http://127.0.0.1:9/v1",
        "model_name": deployment_id,
        "host": "worker-a",
    }
    with state.store.begin("deployment", deployment_id) as writer:
        (writer.path / DEPLOYMENT_FILE).write_text(json.dumps(record))
        writer.commit(tenant_id=tenant_id, config={"record": "deployment"})
    with state.db.session() as session:
        session.add(
            Artifact(
                id=deployment_id,
                tenant_id=tenant_id,
                kind="deployment",
                uri=state.store.uri(deployment_id),
                job_id=new_id("job"),
            )
        )
        session.commit()
    return deployment_id


def test_list_get_and_undeploy_a_deployment(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    store = gw.client.app.state.nexa.store  # type: ignore[attr-defined]
    deployment_id = _register_deployment(gw, gw.key)

    listed = gw.client.get("/v1/deployments", headers=gw.auth())
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["deployment_id"] == deployment_id and item["status"] == "running"
    assert item["openai_base_url"] == "http://127.0.0.1:9/v1" and item["model_name"] == deployment_id

    stopped = gw.client.delete(f"/v1/deployments/{deployment_id}", headers=gw.auth())
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "stopping" and stop_requested(store, deployment_id)
    # Undeploy twice is harmless; once the server confirms, the status says so.
    assert gw.client.delete(f"/v1/deployments/{deployment_id}", headers=gw.auth()).status_code == 200
    mark_stopped(store, deployment_id, reason="stop requested")
    one = gw.client.get(f"/v1/deployments/{deployment_id}", headers=gw.auth())
    assert one.json()["status"] == "stopped"


def test_other_tenants_cannot_see_or_stop_a_deployment(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    store = gw.client.app.state.nexa.store  # type: ignore[attr-defined]
    deployment_id = _register_deployment(gw, gw.key)
    other = gw.new_tenant_key("someone-else")

    assert gw.client.get("/v1/deployments", headers=gw.auth(other)).json()["items"] == []
    for method in ("get", "delete"):
        r = getattr(gw.client, method)(f"/v1/deployments/{deployment_id}", headers=gw.auth(other))
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    assert not stop_requested(store, deployment_id)
    # A checkpoint id is not a deployment, even for its owner.
    assert gw.client.get(f"/v1/deployments/{new_id('ckpt')}", headers=gw.auth()).status_code == 404
