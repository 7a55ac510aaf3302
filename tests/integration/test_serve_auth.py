"""A deployed endpoint checks its callers: the endpoint key, or an API key of the deploying tenant.

The serving app's key check runs against a real gateway served over HTTP (uvicorn on
loopback): the tenant's key passes, another tenant's key and a revoked key do not.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nexa_engines.serve.auth import EndpointAuth, key_sha256
from nexa_gateway.main import create_app
from nexa_gateway.services.keys import create_api_key
from nexa_gateway.settings import Settings
from tests.fixtures.loopback_server import serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    root = tmp_path_factory.mktemp("auth-gw")
    app = create_app(
        Settings(
            database_url=f"sqlite:///{root / 'nexa.db'}",
            artifact_root=root / "artifacts",
            worker_secret="s",
            key_cache_seconds=0,
            platform_signing_key=secrets.token_hex(32),
        )
    )
    with serving(app) as url:
        yield url, app.state.nexa


def _endpoint(auth: EndpointAuth) -> TestClient:
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": []}

    @app.get("/v2/health/ready")
    def ready() -> dict[str, Any]:
        return {"ready": True}

    auth.install(app)
    return TestClient(app)


def _key(state: Any, tenant: str) -> Any:
    with state.db.session() as session:
        return create_api_key(session, tenant_name=tenant)


def test_tenant_keys_pass_other_tenants_and_revoked_keys_do_not(
    gateway: tuple[str, Any], tmp_path: Path
) -> None:
    url, state = gateway
    owner = _key(state, "owner")
    stranger = _key(state, "stranger")
    endpoint = _endpoint(EndpointAuth(gateway_url=url, tenant_id=owner.tenant_id, ttl=0, negative_ttl=0))

    def status(key: str | None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return endpoint.get("/v1/models", headers=headers).status_code

    assert status(owner.key) == 200
    assert status(stranger.key) == 401
    assert status(None) == 401
    assert status("nexa_made-up") == 401
    assert endpoint.get("/v2/health/ready").status_code == 200  # probes stay open
    refused = endpoint.get("/v1/models", headers={"Authorization": f"Bearer {stranger.key}"})
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["www-authenticate"] == "Bearer"

    with state.db.session() as session:
        from nexa_gateway.services.keys import revoke_key

        revoke_key(session, owner.tenant_id, owner.key_id)
    state.keys.forget_all()
    assert status(owner.key) == 401


def test_the_endpoint_key_works_without_a_gateway() -> None:
    auth = EndpointAuth(
        endpoint_key_sha256=frozenset({key_sha256("nexa_ep_secret")}),
        gateway_url="http://127.0.0.1:9",  # nothing listens there
        tenant_id="tnt_x",
    )
    endpoint = _endpoint(auth)
    assert endpoint.get("/v1/models", headers={"Authorization": "Bearer nexa_ep_secret"}).status_code == 200
    assert endpoint.get("/v1/models", headers={"Authorization": "Bearer nexa_someone"}).status_code == 401
    assert endpoint.get("/v1/models", headers={"Authorization": "Bearer nexa_ep_other"}).status_code == 401


def test_a_recently_seen_key_survives_a_gateway_outage(gateway: tuple[str, Any]) -> None:
    url, state = gateway
    owner = _key(state, "outage-owner")
    now = [0.0]
    auth = EndpointAuth(gateway_url=url, tenant_id=owner.tenant_id, ttl=30, clock=lambda: now[0])
    assert auth.allows(owner.key)
    auth.gateway_url = "http://127.0.0.1:9"
    now[0] = 60.0  # the answer expired and the gateway is gone: the last answer stands
    assert auth.allows(owner.key)
    assert not auth.allows("nexa_never-seen")
