"""API keys, tenants and credential kinds (RELIABILITY R9, R11)."""

from __future__ import annotations

from pathlib import Path

from nexa_gateway.services.keys import generate_api_key, well_formed
from tests.integration.gateway_app import WORKER_SECRET, Gateway, build_gateway

UNAUTHORIZED = {"error": {"type": "unauthorized", "message": "missing or invalid credentials"}}


def test_key_format_has_a_checksum() -> None:
    key = generate_api_key()
    assert key.startswith("nexa_") and well_formed(key)
    typo = key[:-1] + ("a" if key[-1] != "a" else "b")
    assert not well_formed(typo)
    assert not well_formed("nexa_short")


def test_key_lifecycle_shown_once_revoked_refused(gateway: Gateway) -> None:
    c = gateway.client
    created = c.post("/v1/keys", json={"name": "ci"}, headers=gateway.auth())
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert well_formed(new_key)
    listed = c.get("/v1/keys", headers=gateway.auth()).json()
    assert {k["name"] for k in listed} == {"bootstrap", "ci"}
    assert all("key" not in k for k in listed)
    assert new_key not in str(listed)
    assert c.get("/v1/jobs", headers=gateway.auth(new_key)).status_code == 200
    revoked = c.delete(f"/v1/keys/{created.json()['key_id']}", headers=gateway.auth())
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    after = c.get("/v1/jobs", headers=gateway.auth(new_key))
    unknown = c.get("/v1/jobs", headers=gateway.auth(generate_api_key()))
    garbage = c.get("/v1/jobs", headers={"Authorization": "Bearer 12345"})
    missing = c.get("/v1/jobs")
    for r in (after, unknown, garbage, missing):
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED


def test_only_hashes_are_stored(gateway: Gateway) -> None:
    from sqlalchemy import text

    state = gateway.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.engine.connect() as conn:
        dumped = " ".join(str(row) for row in conn.execute(text("SELECT * FROM api_keys")))
    assert gateway.key not in dumped
    assert gateway.key[5:] not in dumped


def test_expired_key_gets_the_same_401(sqlite_gateway: Gateway) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from nexa_gateway.db import ApiKey, utcnow

    c = sqlite_gateway.client
    made = c.post(
        "/v1/keys", json={"name": "short", "expires_in_days": 1}, headers=sqlite_gateway.auth()
    ).json()
    state = c.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == made["key_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    state.keys.forget_all()
    r = c.get("/v1/jobs", headers=sqlite_gateway.auth(made["key"]))
    assert r.status_code == 401 and r.json() == UNAUTHORIZED


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    for gw in build_gateway(f"sqlite:///{tmp_path / 'rl.db'}", tmp_path / "rl", rate_limit_per_minute=5):
        codes = [gw.client.get("/v1/jobs", headers=gw.auth()).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5
        limited = gw.client.get("/v1/jobs", headers=gw.auth())
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["type"] == "rate_limited"
        other = gw.new_tenant_key("other")
        assert gw.client.get("/v1/jobs", headers=gw.auth(other)).status_code == 200


def test_other_tenants_ids_answer_404_and_leak_nothing(gateway: Gateway) -> None:
    c = gateway.client
    job = gateway.submit_audit()
    upload = c.post(
        "/v1/datasets",
        files={"file": ("d.jsonl", gateway.dataset_file().read_bytes())},
        headers=gateway.auth(),
    ).json()
    key_b = gateway.new_tenant_key("tenant-b")
    b = gateway.auth(key_b)
    probes = [
        ("GET", f"/v1/jobs/{job['job_id']}"),
        ("GET", f"/status/{job['job_id']}"),
        ("GET", f"/v1/jobs/{job['job_id']}/events"),
        ("GET", f"/v1/jobs/{job['job_id']}/logs"),
        ("POST", f"/v1/jobs/{job['job_id']}/cancel"),
        ("GET", f"/v1/datasets/{upload['dataset_id']}"),
        ("GET", f"/v1/artifacts/{upload['dataset_id']}"),
        ("GET", f"/v1/artifacts/{upload['dataset_id']}/files/data.jsonl"),
    ]
    for method, path in probes:
        r = c.request(method, path, headers=b)
        assert r.status_code == 404, (path, r.text)
        assert job["job_id"] not in r.text or "not found" in r.json()["error"]["message"]
        assert "row number" not in r.text
    assert c.get("/v1/jobs", headers=b).json()["items"] == []
    assert c.get("/v1/datasets", headers=b).json()["items"] == []
    # Tenant B cannot use A's dataset id either.
    r = c.post("/v1/audit", json={"dataset_uri": upload["dataset_id"]}, headers=b)
    assert r.status_code == 422 and r.json()["error"]["type"] == "dataset_not_found"
    # A still sees its job untouched.
    assert c.get(f"/v1/jobs/{job['job_id']}", headers=gateway.auth()).json()["status"] == "pending"


def test_credential_kinds_do_not_cross(sqlite_gateway: Gateway) -> None:
    c = sqlite_gateway.client
    worker = sqlite_gateway.register_worker()
    assert c.get("/v1/jobs", headers=worker).status_code == 401
    assert c.post("/v1/workers/claim", json={}, headers=sqlite_gateway.auth()).status_code == 401
    assert (
        c.post("/v1/workers/register", json={"name": "x"}, headers=sqlite_gateway.auth()).status_code == 401
    )
    assert c.post("/v1/workers/register", json={"name": "x"}, headers=worker).status_code == 401
    assert c.post("/v1/workers/register", json={"name": "x"}).status_code == 401
    ok = c.post(
        "/v1/workers/register", json={"name": "x"}, headers={"Authorization": f"Bearer {WORKER_SECRET}"}
    )
    assert ok.status_code == 201


def test_cached_status_answers_follow_the_same_rules(sqlite_gateway: Gateway) -> None:
    c = sqlite_gateway.client
    job = sqlite_gateway.submit_audit()
    url = f"/v1/jobs/{job['job_id']}"
    first = c.get(url, headers=sqlite_gateway.auth())
    second = c.get(url, headers=sqlite_gateway.auth())  # now served from the caches
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and second.headers["content-type"] == "application/json"
    assert c.get(f"/status/{job['job_id']}", headers=sqlite_gateway.auth()).json() == first.json()
    # Another tenant never gets a cached body, a worker token never passes.
    other = sqlite_gateway.new_tenant_key("tenant-c")
    assert c.get(url, headers=sqlite_gateway.auth(other)).status_code == 404
    assert c.get(url, headers=sqlite_gateway.register_worker()).status_code == 401
    # A change through this gateway is visible at once.
    assert c.post(f"{url}/cancel", headers=sqlite_gateway.auth()).status_code == 200
    assert c.get(url, headers=sqlite_gateway.auth()).json()["status"] == "cancelled"
    # Revoking the key refuses it on the very next poll.
    made = c.post("/v1/keys", json={"name": "poller"}, headers=sqlite_gateway.auth()).json()
    assert c.get(url, headers=sqlite_gateway.auth(made["key"])).status_code == 200
    assert c.get(url, headers=sqlite_gateway.auth(made["key"])).status_code == 200
    c.delete(f"/v1/keys/{made['key_id']}", headers=sqlite_gateway.auth())
    assert c.get(url, headers=sqlite_gateway.auth(made["key"])).json() == UNAUTHORIZED
    metrics = c.get("/metrics").text
    assert 'nexa_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"}' in metrics
