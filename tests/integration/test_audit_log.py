"""The audit log on a real gateway (SQLite and PostgreSQL): actions are recorded with who, what,
when and from where, refusals too; each tenant reads only its own; rows cannot be changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration

DEADLINE = 60.0


@pytest.fixture
def gw(db_url: str, tmp_path: Path) -> Iterator[Gateway]:
    yield from build_gateway(db_url, tmp_path / "gw", audit_flush_seconds=0.05)


def _entries(gw: Gateway, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    r = gw.client.get("/v1/audit-log", params=params, headers=gw.auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _wait_for(gw: Gateway, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = _entries(gw)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"only {len(found)} audit entries: {found}"
        time.sleep(0.05)


def test_actions_are_recorded_with_actor_target_and_outcome(gw: Gateway) -> None:
    made = gw.client.post("/v1/keys", json={"name": "ci", "role": "member"}, headers=gw.auth())
    assert made.status_code == 201, made.text
    member_key, member_id = made.json()["key"], made.json()["key_id"]
    job = gw.submit_audit()
    assert gw.client.post(f"/v1/jobs/{job['job_id']}/cancel", headers=gw.auth()).status_code == 200
    # A member may not revoke keys: the refusal is an entry too, naming the member.
    refused = gw.client.delete(f"/v1/keys/{member_id}", headers=gw.auth(member_key))
    assert refused.status_code == 403
    assert gw.client.delete(f"/v1/keys/{member_id}", headers=gw.auth()).status_code == 200
    # Reads and estimates are not actions.
    gw.client.get("/v1/jobs", headers=gw.auth())
    gw.client.post("/v1/audit/estimate", json={"dataset_uri": str(gw.dataset_file())}, headers=gw.auth())

    entries = _wait_for(gw, 5)
    actions = [(e["action"], e["status_code"]) for e in reversed(entries)]
    assert actions == [
        ("POST /v1/keys", 201),
        ("POST /v1/audit", 201),
        ("POST /v1/jobs/{job_id}/cancel", 200),
        ("DELETE /v1/keys/{key_id}", 403),
        ("DELETE /v1/keys/{key_id}", 200),
    ]
    by_action = {(e["action"], e["status_code"]): e for e in entries}
    submitted = by_action[("POST /v1/audit", 201)]
    assert submitted["target"] == job["job_id"]  # from the answer's Location
    assert submitted["actor_kind"] == "key" and submitted["actor_id"].startswith("key_")
    assert by_action[("DELETE /v1/keys/{key_id}", 403)]["actor_id"] == member_id
    assert by_action[("DELETE /v1/keys/{key_id}", 200)]["target"] == member_id
    assert all(e["client_ip"] and e["at"] for e in entries)
    # Filters and paging.
    assert [e["status_code"] for e in _entries(gw, action="DELETE /v1/keys/{key_id}")] == [200, 403]
    first = gw.client.get("/v1/audit-log", params={"limit": 2}, headers=gw.auth()).json()
    older = _entries(gw, before=first["next_before"], limit=10)
    assert [e["id"] for e in first["items"] + older] == [e["id"] for e in entries]


def test_each_tenant_reads_only_its_own_and_members_none(gw: Gateway) -> None:
    gw.submit_audit()
    _wait_for(gw, 1)
    other = gw.new_tenant_key("other-co")
    assert _entries(gw, other) == []
    r = gw.client.get("/v1/audit-log", params={"tenant": "default"}, headers=gw.auth(other))
    assert r.status_code == 403
    member = gw.client.post("/v1/keys", json={"name": "m", "role": "member"}, headers=gw.auth()).json()["key"]
    assert gw.client.get("/v1/audit-log", headers=gw.auth(member)).status_code == 403


def test_rows_cannot_be_changed_or_deleted(gw: Gateway) -> None:
    gw.submit_audit()
    _wait_for(gw, 1)
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    for statement in ("UPDATE audit_log SET action = 'nothing'", "DELETE FROM audit_log"):
        with state.db.session() as session, pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))
            session.commit()
    assert _entries(gw)[0]["action"] == "POST /v1/audit"
