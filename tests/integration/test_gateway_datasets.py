"""Dataset uploads and artifact reads through the real gateway: limits, bad files, tampering."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.integration.gateway_app import Gateway, build_gateway


def _parquet_bytes(rows: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(rows)], "completion": ["a"] * rows}), buf)
    return buf.getvalue()


def test_upload_parquet_jsonl_csv_and_read_back(gateway: Gateway) -> None:
    c, h = gateway.client, gateway.auth()
    files = {
        "a.parquet": _parquet_bytes(5),
        "b.jsonl": b'{"text": "x"}\n{"text": "y"}\n',
        "c.csv": b"instruction,response\nhi,hello\n",
    }
    made = []
    for name, data in files.items():
        r = c.post("/v1/datasets", files={"file": (name, data)}, data={"name": f"my {name}"}, headers=h)
        assert r.status_code == 201, r.text
        made.append(r.json())
    assert [d["num_rows"] for d in made] == [5, 2, 1]
    assert made[0]["columns"] == ["prompt", "completion"] and made[0]["format"] == "parquet"
    listed = c.get("/v1/datasets", headers=h).json()["items"]
    assert {d["dataset_id"] for d in listed} == {d["dataset_id"] for d in made}
    info = c.get(f"/v1/artifacts/{made[1]['dataset_id']}", headers=h).json()
    assert [f["path"] for f in info["manifest"]["files"]] == ["data.jsonl"]
    body = c.get(f"/v1/artifacts/{made[1]['dataset_id']}/files/data.jsonl", headers=h)
    assert body.content == files["b.jsonl"]
    # An uploaded dataset id is accepted by a job.
    r = c.post("/v1/audit", json={"dataset_uri": made[0]["dataset_id"]}, headers=h)
    assert r.status_code == 201


def test_bad_uploads_are_clear_4xx_and_store_nothing(tmp_path: Path) -> None:
    for gw in build_gateway(f"sqlite:///{tmp_path / 'up.db'}", tmp_path / "gw", max_upload_bytes=1000):
        c, h = gw.client, gw.auth()
        too_big = c.post("/v1/datasets", files={"file": ("big.jsonl", b'{"t": "x"}\n' * 200)}, headers=h)
        assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "payload_too_large"
        garbage = c.post("/v1/datasets", files={"file": ("bad.parquet", b"not parquet at all")}, headers=h)
        assert garbage.status_code == 400 and garbage.json()["error"]["type"] == "dataset_unreadable"
        assert garbage.json()["error"]["field"] == "file"
        empty = c.post("/v1/datasets", files={"file": ("e.csv", b"")}, headers=h)
        assert empty.status_code == 400
        wrong = c.post("/v1/datasets", files={"file": ("model.bin", b"\x00\x01")}, headers=h)
        assert wrong.status_code == 415 and wrong.json()["error"]["type"] == "unsupported_media_type"
        missing = c.post("/v1/datasets", headers=h)
        assert missing.status_code == 422 and missing.json()["error"]["field"] == "file"
        assert c.get("/v1/datasets", headers=h).json()["items"] == []
        # Nothing half-written is left where readers look.
        datasets_dir = gw.root / "artifacts" / "datasets"
        assert not datasets_dir.exists() or list(datasets_dir.iterdir()) == []


def test_artifact_files_stream_with_ranges(sqlite_gateway: Gateway) -> None:
    c, h = sqlite_gateway.client, sqlite_gateway.auth()
    body = b"".join(b'{"text": "row %d"}\n' % i for i in range(2000))
    made = c.post("/v1/datasets", files={"file": ("d.jsonl", body)}, headers=h).json()
    url = f"/v1/artifacts/{made['dataset_id']}/files/data.jsonl"
    whole = c.get(url, headers=h)
    assert whole.status_code == 200 and whole.content == body
    assert whole.headers["accept-ranges"] == "bytes"
    part = c.get(url, headers={**h, "Range": "bytes=10-29"})
    assert part.status_code == 206 and part.content == body[10:30]
    assert part.headers["content-range"] == f"bytes 10-29/{len(body)}"


def test_tampered_artifact_is_refused_on_read(sqlite_gateway: Gateway) -> None:
    c, h = sqlite_gateway.client, sqlite_gateway.auth()
    made = c.post("/v1/datasets", files={"file": ("d.jsonl", b'{"text": "x"}\n')}, headers=h).json()
    data = sqlite_gateway.root / "artifacts" / "datasets" / made["dataset_id"] / "data.jsonl"
    data.write_bytes(b'{"text": "y"}\n')
    info = c.get(f"/v1/artifacts/{made['dataset_id']}", headers=h)
    assert info.status_code == 409 and info.json()["error"]["type"] == "artifact_corrupt"
    file = c.get(f"/v1/artifacts/{made['dataset_id']}/files/data.jsonl", headers=h)
    assert file.status_code == 409
    escape = c.get(f"/v1/artifacts/{made['dataset_id']}/files/../../../nexa.db", headers=h)
    assert escape.status_code in (400, 404)
