"""Deleting from the S3 artifact store against a real S3 server (moto, over HTTP): every object under
the artifact's prefix goes, page after page, the manifest first; a neighbour whose id shares a prefix
stays; deleting what is not there is no error."""

from __future__ import annotations

import pytest

from nexa.contracts.artifacts import MANIFEST_NAME
from nexa.ids import new_id
from nexa_store.base import ArtifactNotFound
from nexa_store.s3 import S3ArtifactStore
from tests.fixtures.s3_server import S3Server

pytestmark = pytest.mark.integration


def _commit(store: S3ArtifactStore, artifact_id: str, files: int) -> None:
    with store.begin("checkpoint", artifact_id) as writer:
        for i in range(files):
            (writer.path / f"shard-{i:05d}.bin").write_bytes(i.to_bytes(4, "big"))
        writer.commit(tenant_id="tnt_x")


def _keys(store: S3ArtifactStore, artifact_id: str) -> list[str]:
    prefix = store.artifact_prefix(artifact_id)
    return [
        o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)
    ]


def test_delete_removes_every_object_in_pages_and_is_idempotent(s3_server: S3Server) -> None:
    store = s3_server.make_store(prefix="tenant-data")
    big, neighbour = new_id("ckpt"), new_id("ckpt")
    _commit(store, big, 1005)  # more than one listing page and one DeleteObjects request (1,000 each)
    _commit(store, neighbour, 2)
    # A leftover of a killed earlier upload under the same id goes too: it is under the prefix.
    store._put_bytes(store.object_key(big, "stray/leftover.bin"), b"x")
    assert len(_keys(store, big)) == 1005 + 2

    assert store.delete(big) is True
    assert _keys(store, big) == [] and not store.exists(big)
    with pytest.raises(ArtifactNotFound):
        store.read_manifest(big)
    assert store.read_manifest(neighbour, verify=True).artifact_id == neighbour
    assert store.delete(big) is False  # a retry: nothing there, no error
    assert store.delete(new_id("ds")) is False


def test_a_delete_cut_short_is_finished_by_deleting_again(s3_server: S3Server) -> None:
    store = s3_server.make_store()
    artifact_id = new_id("ckpt")
    _commit(store, artifact_id, 3)
    # As if a delete stopped right after the manifest went: readers see nothing, files remain.
    store.client.remove_object(store.bucket, store.object_key(artifact_id, MANIFEST_NAME))
    assert not store.exists(artifact_id) and len(_keys(store, artifact_id)) == 3
    assert store.delete(artifact_id) is True
    assert _keys(store, artifact_id) == []
