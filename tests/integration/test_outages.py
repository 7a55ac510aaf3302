"""Honest answers when what the gateway stands on fails: 503 with Retry-After, never a 500 or a leaked path.

Also the request body cap: a huge JSON body is refused before it is parsed.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from nexa_gateway.errors import outage_of
from tests.integration.gateway_app import Gateway, build_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    (tmp_path / "db").mkdir()
    yield from build_gateway(
        f"sqlite:///{tmp_path / 'db' / 'nexa.db'}", tmp_path / "root", max_request_bytes=64 * 1024
    )


def test_a_vanished_database_answers_503_with_retry_after(gw: Gateway, tmp_path: Path) -> None:
    assert gw.client.get("/readyz").status_code == 200
    # The database goes away (its volume unmounted): pooled connections are dropped and new ones fail.
    shutil.move(tmp_path / "db", tmp_path / "db-away")
    (tmp_path / "db").write_text("not a directory")
    gw.client.app.state.nexa.db.engine.dispose()  # type: ignore[attr-defined]

    r = gw.client.post("/v1/audit", json={"dataset_uri": "ds_00000000000000000000000000"}, headers=gw.auth())
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"]["type"] == "database_unavailable"
    ready = gw.client.get("/readyz")
    assert ready.status_code == 503 and "database" in ready.json()["error"]["message"]
    for body in (r.text, ready.text):
        assert str(tmp_path) not in body and "sqlite" not in body.lower()

    # Back again: the same request works, nothing needed restarting.
    (tmp_path / "db").unlink()
    shutil.move(tmp_path / "db-away", tmp_path / "db")
    assert gw.client.get("/readyz").status_code == 200
    assert gw.client.get("/v1/jobs", headers=gw.auth()).status_code == 200


def test_readyz_says_when_the_disk_is_full_and_names_no_path(tmp_path: Path) -> None:
    for gw in build_gateway(f"sqlite:///{tmp_path / 'n.db'}", tmp_path / "root", min_free_disk_bytes=1 << 62):
        r = gw.client.get("/readyz")
        assert r.status_code == 503 and "disk full" in r.json()["error"]["message"]
        assert str(tmp_path) not in r.text


def test_outages_are_told_apart_from_bugs() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/srv/nexa/artifacts/x")
    assert (outage_of(full) or pytest.fail()).type == "disk_full"
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("commit failed") from exc
    except RuntimeError as wrapped:
        assert (outage_of(wrapped) or pytest.fail()).type == "disk_full"
    sqlite_full = OperationalError("INSERT", {}, Exception("database or disk is full"))
    assert (outage_of(sqlite_full) or pytest.fail()).type == "disk_full"
    down = OperationalError("SELECT 1", {}, Exception("connection to server at 10.0.0.5 failed"))
    answer = outage_of(down) or pytest.fail()
    assert answer.type == "database_unavailable" and "10.0.0.5" not in answer.message
    assert outage_of(KeyError("bug")) is None and outage_of(OSError(errno.EACCES, "denied")) is None


def test_request_bodies_are_capped_before_parsing(gw: Gateway) -> None:
    huge = {"dataset_uri": "ds_00000000000000000000000000", "text_columns": ["t" * 100] * 2000}
    r = gw.client.post("/v1/audit", json=huge, headers=gw.auth())
    assert r.status_code == 413, r.text
    assert r.json()["error"] == {
        "type": "payload_too_large",
        "message": "request body exceeds the 65536-byte limit",
        "field": "body",
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"dataset_uri": "ds_00000000000000000000000000", "labels": {"a": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}}'

    r = gw.client.post(
        "/v1/audit", content=chunks(), headers={**gw.auth(), "content-type": "application/json"}
    )
    assert r.status_code == 413 and "65536-byte limit" in r.json()["error"]["message"]
    # Uploads have their own, larger limit and are not cut at this one.
    rows = b"".join(b'{"text": "row %d"}\n' % i for i in range(8000))
    assert len(rows) > 64 * 1024
    up = gw.client.post("/v1/datasets", files={"file": ("d.jsonl", rows)}, headers=gw.auth())
    assert up.status_code == 201, up.text
    assert up.json()["num_rows"] == 8000


def test_gzipped_jsonl_uploads_work(gw: Gateway) -> None:
    import gzip

    rows = b"".join(b'{"text": "row %d"}\n' % i for i in range(500))
    up = gw.client.post(
        "/v1/datasets", files={"file": ("d.jsonl.gz", gzip.compress(rows))}, headers=gw.auth()
    )
    assert up.status_code == 201, up.text
    assert up.json()["num_rows"] == 500 and up.json()["format"] == "jsonl"
    body = gw.client.get(f"/v1/artifacts/{up.json()['dataset_id']}/files/data.jsonl", headers=gw.auth())
    assert body.content == rows
