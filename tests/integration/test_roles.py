"""Roles: members run jobs, tenant admins manage keys, platform admins grant what tenants may read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nexa_gateway.db import ApiKey, KeyRole
from nexa_gateway.services.keys import create_api_key
from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    yield from build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "root")


def _create(gw: Gateway, key: str, **body: object) -> tuple[int, dict[str, object]]:
    r = gw.client.post("/v1/keys", json={"name": "k", **body}, headers=gw.auth(key))
    return r.status_code, r.json()


def test_members_run_jobs_but_do_not_manage_keys(gw: Gateway) -> None:
    assert gw.client.get("/v1/keys/self", headers=gw.auth()).json()["role"] == "platform_admin"
    status, admin = _create(gw, gw.key, role="admin")
    assert status == 201 and admin["role"] == "admin"
    status, member = _create(gw, str(admin["key"]))  # member is the default
    assert status == 201 and member["role"] == "member"
    member_key = str(member["key"])

    status, body = _create(gw, member_key)
    assert status == 403 and body["error"]["type"] == "forbidden"  # type: ignore[index]
    assert "role admin" in body["error"]["message"]  # type: ignore[index]
    r = gw.client.delete(f"/v1/keys/{admin['key_id']}", headers=gw.auth(member_key))
    assert r.status_code == 403
    # A member does the tenant's work: upload and submit.
    up = gw.client.post(
        "/v1/datasets",
        files={"file": ("d.jsonl", b'{"text": "x"}\n', "application/json")},
        headers=gw.auth(member_key),
    )
    assert up.status_code == 201, up.text
    r = gw.client.post(
        "/v1/audit", json={"dataset_uri": up.json()["dataset_id"]}, headers=gw.auth(member_key)
    )
    assert r.status_code == 201, r.text
    listed = gw.client.get("/v1/keys", headers=gw.auth(member_key)).json()
    assert {k["role"] for k in listed} == {"platform_admin", "admin", "member"}


def test_no_key_grants_more_than_its_own_role(gw: Gateway) -> None:
    status, admin = _create(gw, gw.key, role="admin")
    status, body = _create(gw, str(admin["key"]), role="platform_admin")
    assert status == 403 and body["error"]["field"] == "role"  # type: ignore[index]
    status, body = _create(gw, gw.key, role="platform_admin")  # only the operator, through the database
    assert status == 403
    status, body = _create(gw, gw.key, role="owner")
    assert status == 422


def test_only_platform_admins_grant_local_roots_and_buckets(gw: Gateway, tmp_path: Path) -> None:
    other = gw.new_tenant_key("acme")  # an admin of tenant acme
    mine = gw.dataset_file("acme.jsonl")
    submit = {"dataset_uri": str(mine)}
    assert gw.client.post("/v1/audit", json=submit, headers=gw.auth(other)).status_code == 422

    grant = {"kind": "local_root", "value": str(gw.root)}
    r = gw.client.post("/v1/admin/tenants/acme/grants", json=grant, headers=gw.auth(other))
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    r = gw.client.post("/v1/admin/tenants/acme/grants", json=grant, headers=gw.auth())
    assert r.status_code == 200 and r.json()["local_roots"] == [str(gw.root.resolve())], r.text
    assert gw.client.post("/v1/audit", json=submit, headers=gw.auth(other)).status_code == 201

    outside = {"kind": "local_root", "value": str(tmp_path / "elsewhere")}
    r = gw.client.post("/v1/admin/tenants/acme/grants", json=outside, headers=gw.auth())
    assert r.status_code == 422 and r.json()["error"]["type"] == "grant_outside_ceiling"
    r = gw.client.post(
        "/v1/admin/tenants/acme/grants", json={"kind": "s3_bucket", "value": "acme-raw"}, headers=gw.auth()
    )
    assert r.json()["s3_buckets"] == ["acme-raw"]
    assert gw.client.get("/v1/admin/tenants/nobody/grants", headers=gw.auth()).status_code == 404

    r = gw.client.post("/v1/admin/tenants/acme/grants/revoke", json=grant, headers=gw.auth())
    assert r.status_code == 200 and r.json()["local_roots"] == []
    assert gw.client.post("/v1/audit", json=submit, headers=gw.auth(other)).status_code == 422


def test_keys_from_before_roles_keep_their_powers(gw: Gateway) -> None:
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        legacy = create_api_key(session, tenant_name="old")
        session.query(KeyRole).filter(KeyRole.key_id == legacy.key_id).delete()
        assert session.get(ApiKey, legacy.key_id) is not None
    state.keys.forget_all()
    assert gw.client.get("/v1/keys/self", headers=gw.auth(legacy.key)).json()["role"] == "admin"
    status, _ = _create(gw, legacy.key)
    assert status == 201
