"""A real gateway app in-process (real database, real artifact store) and helpers to drive it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nexa_gateway.main import create_app
from nexa_gateway.services.keys import generate_api_key
from nexa_gateway.settings import Settings

WORKER_SECRET = "test-worker-secret"


@dataclass
class Gateway:
    client: TestClient
    key: str
    root: Path

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def new_tenant_key(self, tenant: str) -> str:
        from nexa_gateway.services.keys import create_api_key

        state = self.client.app.state.nexa  # type: ignore[attr-defined]
        with state.db.session() as session:
            return create_api_key(session, tenant_name=tenant).key

    def dataset_file(self, name: str = "data.jsonl", rows: int = 3) -> Path:
        path = self.root / name
        path.write_text("".join(f'{{"text": "row number {i}"}}\n' for i in range(rows)))
        return path

    def submit_audit(self, key: str | None = None, **extra: Any) -> dict[str, Any]:
        body = {"dataset_uri": str(self.dataset_file()), **extra}
        r = self.client.post("/v1/audit", json=body, headers=self.auth(key))
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def register_worker(self, **hardware: Any) -> dict[str, str]:
        body: dict[str, Any] = {"name": "test-worker"}
        if hardware:
            body["hardware"] = hardware
        r = self.client.post(
            "/v1/workers/register", json=body, headers={"Authorization": f"Bearer {WORKER_SECRET}"}
        )
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def claim(self, worker: dict[str, str], **body: Any) -> dict[str, Any] | None:
        r = self.client.post("/v1/workers/claim", json=body, headers=worker)
        if r.status_code == 204:
            return None
        assert r.status_code == 200, r.text
        return dict(r.json())


def finish_with_usage(
    gw: Gateway, job: dict[str, Any], worker: dict[str, str], usage: dict[str, float], repeats: int = 1
) -> None:
    """Claim ``job`` with ``worker`` and complete it reporting ``usage``, the report sent ``repeats`` times
    (every repeat is refused: usage is recorded once)."""
    claimed = gw.claim(worker)
    assert claimed is not None and claimed["job_id"] == job["job_id"]
    body = {
        "attempt": claimed["attempt"],
        "result": {},
        "usage": [{"kind": k, "amount": v} for k, v in usage.items()],
    }
    codes = [
        gw.client.post(f"/v1/workers/jobs/{job['job_id']}/complete", json=body, headers=worker).status_code
        for _ in range(repeats)
    ]
    assert codes == [204] + [409] * (repeats - 1), codes


def build_gateway(db_url: str, root: Path, **settings: Any) -> Iterator[Gateway]:
    key = generate_api_key()
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "database_url": db_url,
        "artifact_root": root / "artifacts",
        "allowed_dataset_roots": [root],
        "bootstrap_grant_local_roots": True,  # as `nexa up` does for its own tenant
        # A key of the test's own (the default would be kept in ~/.nexa).
        "platform_signing_key": secrets.token_hex(32),
        "worker_secret": WORKER_SECRET,
        "bootstrap_api_key": key,
        "reaper_interval_seconds": 0.2,
        # Storage is metered by tests that ask for it (test_storage_billing): a tick at an hour's start
        # would otherwise add a usage row to a test that counts them.
        "storage_meter_interval_seconds": 0,
        # The unschedulable sweep marks jobs no worker fits; a test that counts events would see it
        # whenever a tick lands between its steps. Tests that want it set an interval.
        "schedulability_interval_seconds": 0,
        "log_poll_seconds": 0.05,
        **settings,
    }
    app = create_app(Settings(**config))
    with TestClient(app) as client:
        yield Gateway(client=client, key=key, root=root)


@pytest.fixture
def gateway(db_url: str, tmp_path: Path) -> Iterator[Gateway]:
    """The gateway on SQLite and on PostgreSQL."""
    yield from build_gateway(db_url, tmp_path / "gw")


@pytest.fixture
def sqlite_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """The gateway on SQLite only, for tests about HTTP behaviour rather than storage."""
    yield from build_gateway(f"sqlite:///{tmp_path / 'nexa.db'}", tmp_path / "gw")
