"""The local-directory artifact store: staged atomic commits, verification (R14), duplicates, signatures."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import pytest

from nexa.contracts import ArtifactManifest, InputSource
from nexa.ids import new_id
from nexa_store import (
    ArtifactError,
    ArtifactNotFound,
    IntegrityError,
    LocalArtifactStore,
    SignatureError,
    SigningKey,
    SigningUnavailable,
    store_from_config,
    store_from_env,
    verify_signature,
)
from nexa_store.signing import canonical_bytes

FILES = {
    "data.csv": b"a,b\n1,2\n3,4\n",
    "report/summary.txt": b"rows: 2\n",
    "report/plot.bin": bytes(range(256)),
}


def commit(
    store: LocalArtifactStore, artifact_id: str, files: dict[str, bytes], **meta: object
) -> ArtifactManifest:
    """Stage ``files`` under a new writer and commit them."""
    writer = store.begin("dataset", artifact_id)
    for rel, data in files.items():
        target = writer.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return writer.commit(**meta)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def test_round_trip_publishes_files_and_manifest_together(store: LocalArtifactStore) -> None:
    ds = new_id("ds")
    manifest = commit(
        store,
        ds,
        FILES,
        job_id="job_x",
        attempt=2,
        tenant_id="tnt_a",
        inputs=[InputSource(uri="/data/in.csv", sha256="0" * 64)],
        config={"threshold": 0.5},
        metrics={"rows": 2},
    )

    assert manifest.artifact_id == ds and manifest.kind == "dataset"
    assert manifest.created_at.tzinfo is not None and manifest.created_at.utcoffset() == UTC.utcoffset(None)
    assert [f.path for f in manifest.files] == sorted(FILES)
    for entry in manifest.files:
        assert entry.sha256 == hashlib.sha256(FILES[entry.path]).hexdigest()
        assert entry.size == len(FILES[entry.path])

    directory = store.root / "datasets" / ds
    assert store.uri(ds) == str(directory)
    assert json.loads((directory / "manifest.json").read_text())["metrics"] == {"rows": 2}
    assert store.read_manifest(ds) == manifest
    assert store.read_file(ds, "report/summary.txt") == FILES["report/summary.txt"]
    assert store.fetch(ds, store.root / "unused") == directory
    assert store.exists(ds) and store.list_ids("dataset") == [ds]
    assert store.list_ids("checkpoint") == []
    assert list((store.root / ".staging").iterdir()) == []


def test_every_kind_lands_in_its_directory(store: LocalArtifactStore) -> None:
    for kind, prefix, dirname in [
        ("distill", "job", "distill"),
        ("checkpoint", "ckpt", "checkpoints"),
        ("eval", "ev", "evals"),
        ("deployment", "dp", "deployments"),
    ]:
        artifact_id = new_id(prefix)  # type: ignore[arg-type]
        with store.begin(kind, artifact_id) as writer:
            (writer.path / "x.json").write_text("{}")
            writer.commit()
        assert (store.root / dirname / artifact_id / "manifest.json").is_file()
        assert store.list_ids(kind) == [artifact_id]


def test_writer_never_committed_leaves_no_artifact(store: LocalArtifactStore) -> None:
    ds = new_id("ds")
    writer = store.begin("dataset", ds)
    (writer.path / "data.csv").write_bytes(b"a\n1\n")

    assert writer.path.is_relative_to(store.root / ".staging")
    assert not store.exists(ds)
    assert store.list_ids("dataset") == []
    with pytest.raises(ArtifactNotFound):
        store.read_manifest(ds)
    with pytest.raises(ArtifactNotFound):
        store.read_file(ds, "data.csv")


def test_exception_inside_writer_block_discards_staging(store: LocalArtifactStore) -> None:
    ds = new_id("ds")
    with pytest.raises(RuntimeError), store.begin("dataset", ds) as writer:
        (writer.path / "data.csv").write_bytes(b"a\n1\n")
        raise RuntimeError("engine crashed")
    assert not writer.path.exists()
    assert not store.exists(ds)


def test_process_killed_mid_commit_leaves_no_manifest(store: LocalArtifactStore) -> None:
    ds = new_id("ds")
    # The child writes several files and is SIGKILLed inside commit, after manifest.json was
    # written into staging but before the rename that publishes it.
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        import nexa_store.local as local
        store = local.LocalArtifactStore(Path(sys.argv[1]))
        writer = store.begin("dataset", sys.argv[2])
        for i in range(4):
            (writer.path / f"part-{i}.bin").write_bytes(os.urandom(4096))
        local._fsync_tree = lambda path: os.kill(os.getpid(), signal.SIGKILL)
        writer.commit()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(store.root), ds], capture_output=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()

    staged = list((store.root / ".staging").iterdir())
    assert len(staged) == 1 and (staged[0] / "manifest.json").exists()  # the kill happened where intended
    assert not store.exists(ds)
    assert store.list_ids("dataset") == []
    with pytest.raises(ArtifactNotFound):
        store.read_manifest(ds)

    # A sweep for old staging directories clears what the dead writer left; fresh ones stay.
    assert store.remove_stale_staging(older_than_s=3600) == 0
    assert store.remove_stale_staging(older_than_s=-1) == 1
    assert list((store.root / ".staging").iterdir()) == []

    # The next attempt commits normally.
    commit(store, ds, {"data.csv": b"a\n1\n"})
    assert [f.path for f in store.read_manifest(ds).files] == ["data.csv"]


def _change_byte(d: Path) -> None:
    path = d / "data.csv"
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


def _append_byte(d: Path) -> None:
    with (d / "report" / "plot.bin").open("ab") as f:
        f.write(b"\0")


def _add_file(d: Path) -> None:
    (d / "extra.txt").write_text("not in the manifest")


def _add_nested_file(d: Path) -> None:
    (d / "report" / "new" / "deep.txt").parent.mkdir()
    (d / "report" / "new" / "deep.txt").write_text("hidden")


def _remove_file(d: Path) -> None:
    (d / "report" / "summary.txt").unlink()


def _rename_file(d: Path) -> None:
    (d / "data.csv").rename(d / "data2.csv")


def _replace_by_symlink(d: Path) -> None:
    outside = d.parent.parent / "outside.csv"
    outside.write_bytes(FILES["data.csv"])  # same bytes: only the symlink itself is wrong
    (d / "data.csv").unlink()
    (d / "data.csv").symlink_to(outside)


def _add_symlink(d: Path) -> None:
    (d / "link").symlink_to("/etc/hostname")


def _symlinked_directory(d: Path) -> None:
    real = d.parent.parent / "real-report"
    (d / "report").rename(real)
    (d / "report").symlink_to(real)


TAMPERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "change a byte": (_change_byte, "data.csv"),
    "append a byte": (_append_byte, "report/plot.bin"),
    "add a file": (_add_file, "extra.txt"),
    "add a nested file": (_add_nested_file, "report/new/deep.txt"),
    "remove a file": (_remove_file, "report/summary.txt"),
    "rename a file": (_rename_file, "data"),
    "replace a file by a symlink": (_replace_by_symlink, "data.csv"),
    "add a symlink": (_add_symlink, "link"),
    "symlink a directory": (_symlinked_directory, "report"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_tampering_fails_verification(store: LocalArtifactStore, tamper: str) -> None:
    ds = new_id("ds")
    commit(store, ds, FILES)
    change, names = TAMPERS[tamper]
    change(store.root / "datasets" / ds)

    with pytest.raises(IntegrityError, match=names):
        store.read_manifest(ds)
    with pytest.raises(IntegrityError):
        store.fetch(ds, store.root / "unused")
    # Reading without verification still parses: the manifest itself was not touched.
    assert store.read_manifest(ds, verify=False).artifact_id == ds


@pytest.mark.parametrize(
    ("tamper", "rel"),
    [
        ("change a byte", "data.csv"),
        ("append a byte", "report/plot.bin"),
        ("remove a file", "report/summary.txt"),
        ("rename a file", "data.csv"),
        ("replace a file by a symlink", "data.csv"),
        ("symlink a directory", "report/summary.txt"),
    ],
)
def test_read_file_checks_the_one_file(store: LocalArtifactStore, tamper: str, rel: str) -> None:
    ds = new_id("ds")
    commit(store, ds, FILES)
    TAMPERS[tamper][0](store.root / "datasets" / ds)
    with pytest.raises(IntegrityError, match=rel.split("/")[0]):
        store.read_file(ds, rel)


def test_read_file_refuses_unlisted_paths(store: LocalArtifactStore) -> None:
    ds = new_id("ds")
    commit(store, ds, FILES)
    for rel in ["manifest.json", "../../etc/passwd", "nope.csv"]:
        with pytest.raises(ArtifactNotFound):
            store.read_file(ds, rel)


@pytest.mark.parametrize("bad_path", ["../escape.csv", "/etc/passwd", "a//b", "a\\b", "./data.csv"])
def test_manifest_with_unsafe_path_is_rejected(store: LocalArtifactStore, bad_path: str) -> None:
    ds = new_id("ds")
    commit(store, ds, FILES)
    manifest_path = store.root / "datasets" / ds / "manifest.json"
    body = json.loads(manifest_path.read_text())
    body["files"][0]["path"] = bad_path
    manifest_path.write_text(json.dumps(body))
    with pytest.raises(IntegrityError, match="unsafe file path"):
        store.read_manifest(ds, verify=False)


def test_garbage_or_foreign_manifest_is_an_integrity_error(store: LocalArtifactStore) -> None:
    a, b = new_id("ds"), new_id("ds")
    commit(store, a, FILES)
    commit(store, b, FILES)
    (store.root / "datasets" / a / "manifest.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="not a valid manifest"):
        store.read_manifest(a)
    # A manifest copied from another artifact (same files) does not vouch for this one.
    (store.root / "datasets" / a / "manifest.json").write_bytes(
        (store.root / "datasets" / b / "manifest.json").read_bytes()
    )
    with pytest.raises(IntegrityError, match=f"not {a}"):
        store.read_manifest(a)


def test_duplicate_commit_with_identical_files_returns_the_first_manifest(store: LocalArtifactStore) -> None:
    ds = new_id("ds")
    first = commit(store, ds, FILES, job_id="job_a", attempt=1)
    second = commit(store, ds, FILES, job_id="job_a", attempt=1)
    assert second == first
    assert list((store.root / ".staging").iterdir()) == []
    assert store.read_manifest(ds) == first


def test_duplicate_commit_with_different_files_is_refused(store: LocalArtifactStore) -> None:
    ds = new_id("ds")
    first = commit(store, ds, FILES)
    with pytest.raises(ArtifactError, match="different content"):
        commit(store, ds, {**FILES, "data.csv": b"a,b\n9,9\n"})
    assert store.read_manifest(ds) == first
    assert store.read_file(ds, "data.csv") == FILES["data.csv"]
    assert list((store.root / ".staging").iterdir()) == []


def test_writer_cannot_commit_twice(store: LocalArtifactStore) -> None:
    writer = store.begin("dataset", new_id("ds"))
    (writer.path / "data.csv").write_bytes(b"x\n")
    writer.commit()
    with pytest.raises(ArtifactError, match="already committed"):
        writer.commit()


@pytest.mark.parametrize(
    ("kind", "artifact_id"),
    [
        ("dataset", "../../etc"),
        ("dataset", "ds_../../x"),
        ("dataset", new_id("ckpt")),
        ("checkpoint", new_id("ds")),
        ("dataset", new_id("ds").upper()),
        ("model", new_id("ds")),
    ],
)
def test_begin_rejects_ids_that_do_not_name_the_kind(
    store: LocalArtifactStore, kind: str, artifact_id: str
) -> None:
    with pytest.raises(ArtifactError):
        store.begin(kind, artifact_id)


@pytest.mark.parametrize("artifact_id", ["../datasets", "ds_..", "job", new_id("key"), ""])
def test_reads_reject_malformed_ids(store: LocalArtifactStore, artifact_id: str) -> None:
    with pytest.raises(ArtifactError):
        store.read_manifest(artifact_id)


def test_commit_refuses_symlinks_and_a_manifest_of_its_own(store: LocalArtifactStore, tmp_path: Path) -> None:
    writer = store.begin("dataset", new_id("ds"))
    (writer.path / "data.csv").symlink_to(tmp_path)
    with pytest.raises(ArtifactError, match="symlink"):
        writer.commit()
    assert not writer.path.exists()

    writer = store.begin("dataset", new_id("ds"))
    (writer.path / "manifest.json").write_text("{}")
    with pytest.raises(ArtifactError, match="manifest.json"):
        writer.commit()


def test_list_ids_skips_directories_without_manifest(store: LocalArtifactStore) -> None:
    done = new_id("ds")
    commit(store, done, FILES)
    (store.root / "datasets" / new_id("ds")).mkdir()
    (store.root / "datasets" / "not-an-id").mkdir()
    assert store.list_ids("dataset") == [done]


# -- signatures -------------------------------------------------------------------------------


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def test_signed_manifest_verifies_and_survives_a_round_trip(tmp_path: Path, key: SigningKey) -> None:
    store = LocalArtifactStore(tmp_path, signing_key=key, trusted_keys=[key.public_hex])
    ds = new_id("ds")
    manifest = commit(
        store, ds, FILES, metrics={"loss": 0.1 + 0.2, "rows": 10**12}, config={"nested": {"b": 1}}
    )
    assert manifest.signer == key.public_hex and manifest.signature
    read = store.read_manifest(ds)
    assert read.signature == manifest.signature
    verify_signature(read, [key.public_hex])
    assert SigningKey.from_hex(key.private_hex()).public_hex == key.public_hex


def test_edited_manifest_fails_the_signature(tmp_path: Path, key: SigningKey) -> None:
    store = LocalArtifactStore(tmp_path, signing_key=key, trusted_keys=[key.public_hex])
    ds = new_id("ds")
    commit(store, ds, FILES, metrics={"accuracy": 0.5})
    manifest_path = store.root / "datasets" / ds / "manifest.json"
    body = json.loads(manifest_path.read_text())
    body["metrics"]["accuracy"] = 0.99
    manifest_path.write_text(json.dumps(body))
    with pytest.raises(SignatureError, match="does not match"):
        store.read_manifest(ds, verify=False)


def test_swapped_file_with_rewritten_hash_fails_the_signature(tmp_path: Path, key: SigningKey) -> None:
    store = LocalArtifactStore(tmp_path, signing_key=key, trusted_keys=[key.public_hex])
    ds = new_id("ds")
    commit(store, ds, FILES)
    directory = store.root / "datasets" / ds
    evil = b"a,b\n6,6\n6,6\n"
    (directory / "data.csv").write_bytes(evil)
    body = json.loads((directory / "manifest.json").read_text())
    for entry in body["files"]:
        if entry["path"] == "data.csv":
            entry["sha256"], entry["size"] = hashlib.sha256(evil).hexdigest(), len(evil)
    (directory / "manifest.json").write_text(json.dumps(body))

    with pytest.raises(SignatureError):
        store.read_manifest(ds)
    # Without trusted keys the store can only check files against the (rewritten) manifest.
    assert LocalArtifactStore(tmp_path).read_manifest(ds).artifact_id == ds


def test_untrusted_signer_and_missing_signature(tmp_path: Path, key: SigningKey) -> None:
    other = SigningKey.generate()
    signed_by_other = LocalArtifactStore(tmp_path, signing_key=other)
    ds = new_id("ds")
    commit(signed_by_other, ds, FILES)
    with pytest.raises(SignatureError, match="untrusted"):
        LocalArtifactStore(tmp_path, trusted_keys=[key.public_hex]).read_manifest(ds)

    unsigned = new_id("ds")
    commit(LocalArtifactStore(tmp_path), unsigned, FILES)
    assert (
        LocalArtifactStore(tmp_path, trusted_keys=[key.public_hex]).read_manifest(unsigned).signature is None
    )
    strict = LocalArtifactStore(tmp_path, trusted_keys=[key.public_hex], require_signature=True)
    with pytest.raises(SignatureError, match="not signed"):
        strict.read_manifest(unsigned)


def test_signature_covers_everything_but_itself(key: SigningKey) -> None:
    manifest = ArtifactManifest.model_validate(
        {"artifact_id": new_id("ds"), "kind": "dataset", "created_at": "2026-01-01T00:00:00Z", "files": []}
    )
    signed = key.sign(manifest)
    assert canonical_bytes(signed) == canonical_bytes(manifest)
    with pytest.raises(SignatureError):
        verify_signature(signed.model_copy(update={"job_id": "job_other"}), [key.public_hex])
    with pytest.raises(ArtifactError, match="64 hex"):
        SigningKey.from_hex("abc")


# -- opening a store from config ----------------------------------------------------------------


def test_store_from_env_picks_the_local_root(tmp_path: Path) -> None:
    explicit = store_from_env({"NEXA_ARTIFACT_ROOT": str(tmp_path / "a"), "NEXA_HOME": str(tmp_path / "h")})
    assert explicit.describe() == {"kind": "local", "root": str((tmp_path / "a").resolve())}
    home = store_from_env({"NEXA_HOME": str(tmp_path / "h")})
    assert home.describe()["root"] == str((tmp_path / "h" / "artifacts").resolve())
    reopened = store_from_config(home.describe(), {})
    assert (
        isinstance(reopened, LocalArtifactStore) and reopened.root == (tmp_path / "h" / "artifacts").resolve()
    )


def test_store_from_env_signs_with_the_configured_key(tmp_path: Path, key: SigningKey) -> None:
    store = store_from_env(
        {
            "NEXA_ARTIFACT_ROOT": str(tmp_path),
            "NEXA_SIGNING_KEY": key.private_hex(),
            "NEXA_TRUSTED_KEYS": "ab" * 32,
        }
    )
    assert isinstance(store, LocalArtifactStore)
    manifest = commit(store, new_id("ds"), FILES)
    assert manifest.signer == key.public_hex
    store.read_manifest(manifest.artifact_id)  # its own key is trusted alongside the listed one


@pytest.mark.parametrize(
    ("cfg", "env", "message"),
    [
        ({"kind": "s3", "endpoint": "127.0.0.1:9", "bucket": "b"}, {}, "NEXA_S3_ACCESS_KEY"),
        ({"kind": "s3", "bucket": "b"}, {"NEXA_S3_ACCESS_KEY": "a", "NEXA_S3_SECRET_KEY": "s"}, "endpoint"),
        ({"kind": "ftp"}, {}, "unknown artifact store kind"),
        ({"kind": "local"}, {}, "root"),
        ({"kind": "local", "root": "/tmp/x"}, {"NEXA_REQUIRE_SIGNATURE": "maybe"}, "true or false"),
    ],
)
def test_bad_store_config_is_a_clear_error(cfg: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        store_from_config(cfg, env)


def test_store_root_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ArtifactError, match="cannot create the artifact store"):
        LocalArtifactStore(blocker / "artifacts")


def test_staging_is_on_the_same_filesystem_as_the_store(store: LocalArtifactStore) -> None:
    writer = store.begin("dataset", new_id("ds"))
    assert os.stat(writer.path).st_dev == os.stat(store.root).st_dev
    writer.abort()
    assert not writer.path.exists()


def test_signing_without_cryptography_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric.ed25519", None)
    with pytest.raises(SigningUnavailable, match="pip install"):
        SigningKey.generate()
    with pytest.raises(SigningUnavailable, match="cryptography"):
        LocalArtifactStore(tmp_path, trusted_keys=["ab" * 32])
    # Unsigned stores keep working.
    assert commit(LocalArtifactStore(tmp_path), new_id("ds"), FILES).signature is None
