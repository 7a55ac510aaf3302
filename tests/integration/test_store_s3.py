"""The S3 artifact store against a real S3 server (moto, over HTTP): commits, tamper detection (R14),
interrupted uploads, duplicates, signatures, and s3:// dataset references."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from minio.commonconfig import CopySource

from nexa.contracts import ArtifactManifest
from nexa.ids import new_id
from nexa_store import (
    ArtifactError,
    ArtifactNotFound,
    DatasetRefError,
    IntegrityError,
    SignatureError,
    SigningKey,
    StoreUnavailable,
    check_dataset_ref,
    fetch_dataset,
    store_from_config,
    store_from_env,
)
from nexa_store.access import Access
from nexa_store.s3 import S3ArtifactStore
from tests.fixtures.s3_server import S3Server

pytestmark = pytest.mark.integration

FILES = {
    "data.csv": b"a,b\n1,2\n3,4\n",
    "report/summary.txt": b"rows: 2\n",
    "report/plot.bin": bytes(range(256)),
}


def commit(
    store: S3ArtifactStore, artifact_id: str, files: dict[str, bytes], **meta: Any
) -> ArtifactManifest:
    """Stage ``files`` under a new writer and commit them."""
    writer = store.begin("dataset", artifact_id)
    for rel, data in files.items():
        target = writer.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return writer.commit(**meta)


def put(store: S3ArtifactStore, key: str, data: bytes) -> None:
    store.client.put_object(store.bucket, key, io.BytesIO(data), len(data))


def get(store: S3ArtifactStore, key: str) -> bytes:
    response = store.client.get_object(store.bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def keys_under(store: S3ArtifactStore, prefix: str) -> list[str]:
    return sorted(
        o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)
    )


@pytest.fixture
def store(s3_server: S3Server) -> S3ArtifactStore:
    return s3_server.make_store(prefix="team/nexa")


def test_round_trip_over_http(store: S3ArtifactStore, tmp_path: Path) -> None:
    ds = new_id("ds")
    manifest = commit(store, ds, FILES, job_id="job_x", metrics={"rows": 2})

    assert store.root_uri == f"s3://{store.bucket}/team/nexa"
    assert store.uri(ds) == f"s3://{store.bucket}/team/nexa/datasets/{ds}"
    assert keys_under(store, "team/") == sorted(
        [f"team/nexa/datasets/{ds}/{rel}" for rel in FILES] + [f"team/nexa/datasets/{ds}/manifest.json"]
    )
    assert store.read_manifest(ds) == manifest
    assert store.exists(ds) and store.list_ids("dataset") == [ds]
    assert store.list_ids("checkpoint") == []
    assert store.read_file(ds, "report/plot.bin") == FILES["report/plot.bin"]

    fetched = store.fetch(ds, tmp_path / "copy")
    assert fetched == tmp_path / "copy"
    assert {p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()} == {
        *FILES,
        "manifest.json",
    }
    assert (fetched / "data.csv").read_bytes() == FILES["data.csv"]
    # A second fetch into the same place reuses the verified copy.
    assert store.fetch(ds, tmp_path / "copy") == fetched
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not empty"):
        store.fetch(ds, tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_bucket_is_created_and_describe_has_no_secrets(s3_server: S3Server) -> None:
    store = s3_server.make_store(bucket="nexa-fresh-bucket")
    assert store.list_ids("dataset") == []
    assert store.client.bucket_exists("nexa-fresh-bucket")
    info = store.describe()
    assert info == {
        "kind": "s3",
        "endpoint": s3_server.endpoint,
        "bucket": "nexa-fresh-bucket",
        "prefix": "",
        "secure": False,
    }
    assert s3_server.secret_key not in json.dumps(info) and s3_server.access_key not in json.dumps(info)


def test_worker_reopens_the_store_from_describe_and_its_own_env(s3_server: S3Server) -> None:
    gateway_side = s3_server.make_store(prefix="p")
    ds = new_id("ds")
    commit(gateway_side, ds, FILES)
    worker_env = {"NEXA_S3_ACCESS_KEY": s3_server.access_key, "NEXA_S3_SECRET_KEY": s3_server.secret_key}
    worker_side = store_from_config(gateway_side.describe(), worker_env)
    assert worker_side.read_file(ds, "data.csv") == FILES["data.csv"]
    from_env = store_from_env(s3_server.env(gateway_side.bucket, "p"))
    assert from_env.list_ids("dataset") == [ds]


def _change_byte(store: S3ArtifactStore, base: str) -> None:
    data = bytearray(get(store, base + "data.csv"))
    data[0] ^= 0x01
    put(store, base + "data.csv", bytes(data))


def _append_byte(store: S3ArtifactStore, base: str) -> None:
    put(store, base + "report/plot.bin", FILES["report/plot.bin"] + b"\0")


def _add_object(store: S3ArtifactStore, base: str) -> None:
    put(store, base + "extra.txt", b"not in the manifest")


def _add_folder_marker(store: S3ArtifactStore, base: str) -> None:
    put(store, base + "report/new/", b"")


def _remove_object(store: S3ArtifactStore, base: str) -> None:
    store.client.remove_object(store.bucket, base + "report/summary.txt")


def _rename_object(store: S3ArtifactStore, base: str) -> None:
    store.client.copy_object(store.bucket, base + "data2.csv", CopySource(store.bucket, base + "data.csv"))
    store.client.remove_object(store.bucket, base + "data.csv")


TAMPERS: dict[str, tuple[Callable[[S3ArtifactStore, str], None], str]] = {
    "change a byte": (_change_byte, "data.csv"),
    "append a byte": (_append_byte, "report/plot.bin"),
    "add an object": (_add_object, "extra.txt"),
    "add a folder marker": (_add_folder_marker, "report/new/"),
    "remove an object": (_remove_object, "report/summary.txt"),
    "rename an object": (_rename_object, "data"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_tampering_fails_verification(store: S3ArtifactStore, tamper: str, tmp_path: Path) -> None:
    ds = new_id("ds")
    commit(store, ds, FILES)
    change, names = TAMPERS[tamper]
    change(store, store.artifact_prefix(ds))

    with pytest.raises(IntegrityError, match=names):
        store.read_manifest(ds)
    with pytest.raises(IntegrityError):
        store.fetch(ds, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no partial download left behind


@pytest.mark.parametrize(
    ("tamper", "rel"), [("change a byte", "data.csv"), ("remove an object", "report/summary.txt")]
)
def test_read_file_checks_the_one_file(store: S3ArtifactStore, tamper: str, rel: str, tmp_path: Path) -> None:
    ds = new_id("ds")
    commit(store, ds, FILES)
    intact, temporary = store.verified_file(ds, "report/plot.bin", tmp_path)
    assert temporary and intact.read_bytes() == FILES["report/plot.bin"]
    intact.unlink()
    TAMPERS[tamper][0](store, store.artifact_prefix(ds))
    with pytest.raises(IntegrityError, match=rel):
        store.read_file(ds, rel)
    with pytest.raises(IntegrityError, match=rel):
        store.verified_file(ds, rel, tmp_path)
    assert list(tmp_path.iterdir()) == []  # a copy that failed its hash is not left behind


def test_upload_killed_midway_leaves_no_manifest(s3_server: S3Server, tmp_path: Path) -> None:
    store = s3_server.make_store(prefix="p")
    ds = new_id("ds")
    # A separate process starts a commit of five files and is SIGKILLed right after the third upload.
    script = textwrap.dedent(
        """
        import json, os, signal, sys
        from nexa_store.s3 import S3ArtifactStore
        cfg = json.loads(sys.argv[1])
        store = S3ArtifactStore(**cfg["store"])
        writer = store.begin("dataset", cfg["id"])
        for i in range(5):
            (writer.path / f"part-{i}.bin").write_bytes(os.urandom(2048))
        real_upload = store.client.fput_object
        done = []
        def upload_then_die(*args, **kwargs):
            result = real_upload(*args, **kwargs)
            done.append(args[1])
            if len(done) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        store.client.fput_object = upload_then_die
        writer.commit()
        """
    )
    cfg = {
        "store": {
            "endpoint": s3_server.endpoint,
            "bucket": store.bucket,
            "access_key": s3_server.access_key,
            "secret_key": s3_server.secret_key,
            "prefix": "p",
        },
        "id": ds,
    }
    result = subprocess.run([sys.executable, "-c", script, json.dumps(cfg)], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()

    base = store.artifact_prefix(ds)
    assert len(keys_under(store, base)) == 3  # died midway: some files up, no manifest
    assert f"{base}manifest.json" not in keys_under(store, base)
    assert not store.exists(ds)
    assert store.list_ids("dataset") == []
    with pytest.raises(ArtifactNotFound):
        store.read_manifest(ds)
    with pytest.raises(ArtifactNotFound):
        store.fetch(ds, tmp_path / "copy")

    # The retry commits different files; the dead attempt's leftovers do not become "extra" objects.
    commit(store, ds, {"data.csv": b"a\n1\n"})
    assert [f.path for f in store.read_manifest(ds).files] == ["data.csv"]
    assert keys_under(store, base) == [f"{base}data.csv", f"{base}manifest.json"]


def test_upload_failing_halfway_leaves_no_manifest(
    store: S3ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = new_id("ds")
    writer = store.begin("dataset", ds)
    for rel, data in FILES.items():
        (writer.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (writer.path / rel).write_bytes(data)
    real_upload = store.client.fput_object
    calls: list[str] = []

    def upload_then_fail(*args: Any, **kwargs: Any) -> Any:
        if len(calls) == 1:
            raise ConnectionResetError("network went away")
        calls.append(args[1])
        return real_upload(*args, **kwargs)

    monkeypatch.setattr(store.client, "fput_object", upload_then_fail)
    with pytest.raises(StoreUnavailable, match="network went away"):
        writer.commit()
    assert not writer.path.exists()  # staging discarded
    assert not store.exists(ds)
    with pytest.raises(ArtifactNotFound):
        store.read_manifest(ds)


def test_duplicate_commit_is_idempotent_and_different_content_refused(store: S3ArtifactStore) -> None:
    ds = new_id("ds")
    first = commit(store, ds, FILES, job_id="job_a")
    assert commit(store, ds, FILES, job_id="job_a") == first
    with pytest.raises(ArtifactError, match="different content"):
        commit(store, ds, {**FILES, "data.csv": b"a,b\n9,9\n"})
    assert store.read_manifest(ds) == first
    assert store.read_file(ds, "data.csv") == FILES["data.csv"]


def test_signed_manifest_on_s3(s3_server: S3Server) -> None:
    key = SigningKey.generate()
    store = s3_server.make_store(signing_key=key, trusted_keys=[key.public_hex])
    ds = new_id("ds")
    manifest = commit(store, ds, FILES, metrics={"accuracy": 0.5})
    assert store.read_manifest(ds).signer == key.public_hex

    manifest_key = store.object_key(ds, "manifest.json")
    body = json.loads(get(store, manifest_key))
    body["metrics"]["accuracy"] = 0.99
    put(store, manifest_key, json.dumps(body).encode())
    with pytest.raises(SignatureError):
        store.read_manifest(ds)
    assert manifest.metrics == {"accuracy": 0.5}


def test_unreachable_server_is_a_clear_error() -> None:
    store = S3ArtifactStore("127.0.0.1:9", "nexa", "a", "b")
    with pytest.raises(StoreUnavailable, match="127.0.0.1:9"):
        store.ping()


# -- s3:// dataset references --------------------------------------------------------------------


def test_s3_dataset_refs(s3_server: S3Server, tmp_path: Path) -> None:
    store = s3_server.make_store(prefix="nexa")
    store.list_ids("dataset")  # creates the bucket
    rows = b'{"q": "hi", "a": "hello"}\n'
    put(store, "raw/chat.jsonl", rows)
    stored = new_id("ds")
    commit(store, stored, {"data.parquet": b"PAR1...PAR1"}, tenant_id="tnt_a")
    granted = Access("tnt_a", s3_buckets=(store.bucket,))
    ungranted = Access("tnt_b")

    ok = f"s3://{store.bucket}/raw/chat.jsonl"
    check_dataset_ref(ok, store=store, access=granted)
    # The platform's bucket is not every tenant's: without a grant the same URI is refused.
    with pytest.raises(DatasetRefError) as denied:
        check_dataset_ref(ok, store=store, access=ungranted)
    assert denied.value.code == "dataset_not_allowed"
    # Another tenant's stored dataset reads as missing.
    with pytest.raises(DatasetRefError) as foreign:
        fetch_dataset(stored, store=store, access=ungranted, workdir=tmp_path)
    assert foreign.value.code == "dataset_not_found"
    resolved = fetch_dataset(ok, store=store, access=granted, workdir=tmp_path)
    assert resolved.format == "jsonl" and resolved.path.read_bytes() == rows
    assert resolved.sha256 == hashlib.sha256(rows).hexdigest()

    by_id = fetch_dataset(stored, store=store, access=granted, workdir=tmp_path)
    assert by_id.format == "parquet" and by_id.path == tmp_path / stored / "data.parquet"
    assert by_id.path.read_bytes() == b"PAR1...PAR1"

    refused = {
        f"s3://{store.bucket}/raw/missing.jsonl": "dataset_not_found",
        f"s3://{store.bucket}/nexa/datasets/{stored}/data.parquet": "dataset_not_allowed",
        "s3://some-other-bucket/raw/chat.jsonl": "dataset_not_allowed",  # not granted
        f"s3://{store.bucket}/raw/chat.txt": "invalid_dataset_uri",
        new_id("ds"): "dataset_not_found",
    }
    for uri, code in refused.items():
        with pytest.raises(DatasetRefError) as info:
            check_dataset_ref(uri, store=store, access=granted)
        assert info.value.code == code, uri

    # A tenant's own bucket on the same endpoint, once granted, is read with the same client.
    other = store.for_bucket("tenant-raw")
    other.client.make_bucket("tenant-raw")
    put(other, "incoming/rows.jsonl", rows)
    theirs = "s3://tenant-raw/incoming/rows.jsonl"
    with pytest.raises(DatasetRefError):
        check_dataset_ref(theirs, store=store, access=granted)  # not granted yet
    both = Access("tnt_a", s3_buckets=(store.bucket, "tenant-raw"))
    fetched = fetch_dataset(theirs, store=store, access=both, workdir=tmp_path / "w2")
    assert fetched.path.read_bytes() == rows
    # Everything under the store's prefix is Nexa's own: run records too, not only artifacts.
    put(store, "nexa/runs/job_x/attempt-1/result.json", b"{}")
    with pytest.raises(DatasetRefError) as inside:
        check_dataset_ref(
            f"s3://{store.bucket}/nexa/runs/job_x/attempt-1/result.json", store=store, access=both
        )
    assert inside.value.code in ("dataset_not_allowed", "invalid_dataset_uri")


def test_countersigning_replaces_the_manifest_in_s3(s3_server: S3Server) -> None:
    """What the gateway does on acceptance, against a real S3 server: one PUT of the signed manifest."""
    from nexa_store.signing import PlatformTrust, countersign

    store = s3_server.make_store(prefix="signed")
    ds = new_id("ds")
    made = commit(store, ds, {"data.jsonl": b'{"q": 1}\n'}, tenant_id="tnt_a")
    assert made.signature is None
    key = SigningKey.generate()
    trust = PlatformTrust((key.public_hex,), made.created_at)
    assert trust.status(store.read_manifest(ds)) == "unsigned"
    signed = countersign(store, ds, key)
    again = store.read_manifest(ds, verify=True)
    assert again.signature == signed.signature and trust.status(again) == "signed"
    assert countersign(store, ds, key).signature == signed.signature  # idempotent
