"""Deleting from the local artifact store: the manifest and every file go, readers see it gone at once,
and deleting what is not there is no error."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexa.ids import new_id
from nexa_store.base import ArtifactError, ArtifactNotFound
from nexa_store.local import STAGING_DIR, LocalArtifactStore


def _commit(store: LocalArtifactStore, kind: str, artifact_id: str) -> None:
    with store.begin(kind, artifact_id) as writer:
        (writer.path / "data.jsonl").write_text('{"text": "x"}\n')
        (writer.path / "nested").mkdir()
        (writer.path / "nested" / "part.bin").write_bytes(b"\0" * 4096)
        writer.commit(tenant_id="tnt_x")


def test_delete_removes_every_file_and_is_idempotent(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    gone, kept = new_id("ds"), new_id("ds")
    _commit(store, "dataset", gone)
    _commit(store, "dataset", kept)
    assert store.delete(gone) is True
    assert not store.exists(gone) and not store.artifact_dir(gone).exists()
    with pytest.raises(ArtifactNotFound):
        store.read_manifest(gone)
    assert store.list_ids("dataset") == [kept] and store.read_manifest(kept).artifact_id == kept
    # Nothing left behind in staging either, and a second delete (a retry) is no error.
    assert list((store.root / STAGING_DIR).iterdir()) == []
    assert store.delete(gone) is False
    assert store.delete(new_id("ckpt")) is False  # never written at all


def test_delete_takes_only_artifact_ids(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    for bad in ("../../etc", "ds_short", "tnt_" + "a" * 26):
        with pytest.raises(ArtifactError):
            store.delete(bad)
