"""The artifact store on a local directory (standalone mode).

A write goes to ``<root>/.staging/<random>``; commit hashes every file, writes
``manifest.json`` into the staging directory, fsyncs, and renames the whole
directory to ``<root>/<kind dir>/<id>`` in one step. Readers therefore see
either nothing or a complete artifact with its manifest; a process killed
mid-write leaves only a staging directory that no reader looks at.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nexa.contracts import ArtifactManifest, InputSource
from nexa.contracts.artifacts import KIND_DIRS, MANIFEST_NAME
from nexa_store.base import (
    CODE_VERSION,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactWriter,
    IntegrityError,
    check_artifact_id,
    check_run_key,
    kind_for_id,
)
from nexa_store.hashing import (
    find_entry,
    hash_tree,
    manifest_json,
    parse_manifest,
    read_regular_file,
    same_files,
    sha256_bytes,
    sha256_file,
    verify_local_dir,
)
from nexa_store.signing import SignaturePolicy, SigningKey

STAGING_DIR = ".staging"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    # Files first, then their directories, so the rename publishes durable data.
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


class LocalArtifactWriter(ArtifactWriter):
    """A staged write into ``<root>/.staging``; ``commit`` renames it into place."""

    def __init__(self, store: LocalArtifactStore, kind: str, artifact_id: str, path: Path) -> None:
        self.store = store
        self.kind = kind
        self.artifact_id = artifact_id
        self.path = path
        self._done = False

    def commit(
        self,
        *,
        job_id: str | None = None,
        attempt: int | None = None,
        tenant_id: str | None = None,
        pipeline_id: str | None = None,
        inputs: list[InputSource] | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ArtifactManifest:
        """Hash, write the manifest into staging, fsync, rename into place; idempotent for identical files."""
        if self._done:
            raise ArtifactError(f"{self.artifact_id}: this writer was already committed or aborted")
        final = self.store.artifact_dir(self.artifact_id)
        try:
            entries = hash_tree(self.path)
            if (final / MANIFEST_NAME).exists():
                return self._accept_duplicate(entries)
            draft = ArtifactManifest(
                artifact_id=self.artifact_id,
                kind=self.kind,  # checked by check_artifact_id in begin()
                created_at=datetime.now(UTC),
                job_id=job_id,
                attempt=attempt,
                tenant_id=tenant_id,
                pipeline_id=pipeline_id,
                code_version=CODE_VERSION,
                inputs=inputs or [],
                config=config or {},
                metrics=metrics or {},
                files=entries,
            )
            # A JSON round trip first, so the signed bytes are exactly what a reader parses back.
            manifest = self.store.policy.apply(ArtifactManifest.model_validate_json(draft.model_dump_json()))
            (self.path / MANIFEST_NAME).write_bytes(manifest_json(manifest))
            _fsync_tree(self.path)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(self.path, final)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # Another delivery of the same artifact won the rename.
                if (final / MANIFEST_NAME).exists():
                    return self._accept_duplicate(entries)
                raise ArtifactError(
                    f"{final} exists without a manifest; refusing to overwrite it (remove it by hand)"
                ) from exc
            _fsync_path(final.parent)
            self._done = True
            return manifest
        finally:
            if not self._done:
                self.abort()

    def _accept_duplicate(self, entries: list[Any]) -> ArtifactManifest:
        existing = self.store.read_manifest(self.artifact_id, verify=True)
        if not same_files(existing.files, entries):
            raise ArtifactError(
                f"{self.artifact_id} is already committed with different content; artifacts are never overwritten"
            )
        self.abort()
        return existing

    def abort(self) -> None:
        """Discard the staging directory (a no-op once committed or aborted)."""
        if not self._done:
            shutil.rmtree(self.path, ignore_errors=True)
            self._done = True


class LocalArtifactStore(ArtifactStore):
    """Artifacts as directories under ``root``: ``datasets/ distill/ checkpoints/ evals/ deployments/``."""

    def __init__(
        self,
        root: Path,
        *,
        signing_key: SigningKey | None = None,
        trusted_keys: list[str] | None = None,
        require_signature: bool = False,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root_uri = str(self.root)
        self.policy = SignaturePolicy(signing_key, list(trusted_keys or []), require_signature)
        try:
            for dirname in [*KIND_DIRS.values(), STAGING_DIR]:
                (self.root / dirname).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create the artifact store at {self.root}: {exc.strerror}") from exc

    def describe(self) -> dict[str, Any]:
        """``{"kind": "local", "root": ...}``."""
        return {"kind": "local", "root": str(self.root)}

    def artifact_dir(self, artifact_id: str) -> Path:
        """The directory an artifact is (or will be) committed to."""
        kind = kind_for_id(artifact_id)
        return self.root / KIND_DIRS[kind] / artifact_id

    def write_run_record(self, key: str, data: bytes) -> None:
        path = self.root / check_run_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a record

    def begin(self, kind: str, artifact_id: str) -> LocalArtifactWriter:
        """A writer whose ``path`` is a fresh staging directory under ``<root>/.staging``."""
        check_artifact_id(kind, artifact_id)
        staging = Path(tempfile.mkdtemp(prefix=f"{artifact_id}-", dir=self.root / STAGING_DIR))
        return LocalArtifactWriter(self, kind, artifact_id, staging)

    def uri(self, artifact_id: str) -> str:
        """The artifact's directory path."""
        return str(self.artifact_dir(artifact_id))

    def exists(self, artifact_id: str) -> bool:
        """True when the artifact's manifest is there."""
        return (self.artifact_dir(artifact_id) / MANIFEST_NAME).exists()

    def read_manifest(self, artifact_id: str, *, verify: bool = True) -> ArtifactManifest:
        """The manifest; with ``verify``, exactly the listed files must be present with matching hashes."""
        kind = kind_for_id(artifact_id)
        directory = self.artifact_dir(artifact_id)
        manifest_path = directory / MANIFEST_NAME
        try:
            mode = manifest_path.lstat().st_mode
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no committed artifact {artifact_id} in {self.root_uri}") from exc
        if not stat.S_ISREG(mode):
            raise IntegrityError(f"{artifact_id}/{MANIFEST_NAME}: not a regular file")
        manifest = parse_manifest(manifest_path.read_bytes(), artifact_id, kind)
        self.policy.check(manifest)
        if verify:
            verify_local_dir(directory, manifest)
        return manifest

    def fetch(self, artifact_id: str, dest: Path) -> Path:
        """The artifact's own directory after full verification (``dest`` is not used: nothing is copied)."""
        self.read_manifest(artifact_id, verify=True)
        return self.artifact_dir(artifact_id)

    def read_file(self, artifact_id: str, rel_path: str) -> bytes:
        """One listed file's bytes after checking its size and sha256 against the manifest."""
        manifest = self.read_manifest(artifact_id, verify=False)
        entry = find_entry(manifest, rel_path)
        if entry is None:
            raise ArtifactNotFound(f"{artifact_id} has no file {rel_path!r}")
        data = read_regular_file(self._entry_path(artifact_id, entry.path), entry.path)
        if len(data) != entry.size or sha256_bytes(data) != entry.sha256:
            raise IntegrityError(f"{entry.path}: content differs from the manifest")
        return data

    def _entry_path(self, artifact_id: str, rel_path: str) -> Path:
        directory = self.artifact_dir(artifact_id)
        # Every directory on the way must be a real directory, not a symlink out of the store.
        current = directory
        for part in rel_path.split("/")[:-1]:
            current = current / part
            if current.is_symlink() or not current.is_dir():
                raise IntegrityError(f"{rel_path}: {part} is not a plain directory")
        return directory / rel_path

    def verified_file(self, artifact_id: str, rel_path: str, scratch: Path) -> tuple[Path, bool]:
        """The stored file itself, after hashing it in chunks against the manifest."""
        manifest = self.read_manifest(artifact_id, verify=False)
        entry = find_entry(manifest, rel_path)
        if entry is None:
            raise ArtifactNotFound(f"{artifact_id} has no file {rel_path!r}")
        path = self._entry_path(artifact_id, entry.path)
        digest, size = sha256_file(path, entry.path)
        if size != entry.size or digest != entry.sha256:
            raise IntegrityError(f"{entry.path}: content differs from the manifest")
        return path, False

    def replace_manifest(self, manifest: ArtifactManifest) -> None:
        """Write ``manifest.json`` through a temporary file and a rename: readers see the old or the new."""
        directory = self.artifact_dir(manifest.artifact_id)
        if not (directory / MANIFEST_NAME).is_file():
            raise ArtifactNotFound(f"no committed artifact {manifest.artifact_id} in {self.root_uri}")
        temporary = directory / f".{MANIFEST_NAME}.new"
        temporary.write_bytes(manifest_json(manifest))
        _fsync_path(temporary)
        os.replace(temporary, directory / MANIFEST_NAME)
        _fsync_path(directory)

    def delete(self, artifact_id: str) -> bool:
        """Move the artifact's directory into staging in one rename (readers see it gone at once), then
        remove it. A removal cut short leaves only a staging directory, which ``remove_stale_staging``
        clears later; a missing artifact is no error."""
        directory = self.artifact_dir(artifact_id)
        trash = self.root / STAGING_DIR / f"deleted-{artifact_id}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(directory, trash)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArtifactError(f"cannot delete {artifact_id} in {self.root_uri}: {exc.strerror}") from exc
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def remove_stale_staging(self, older_than_s: float = 24 * 3600) -> int:
        """Delete staging directories untouched for ``older_than_s`` (left by killed writers); how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        for child in (self.root / STAGING_DIR).iterdir():
            if child.lstat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        return removed

    def list_ids(self, kind: str) -> list[str]:
        """Committed ids of ``kind`` (directories with a manifest), sorted."""
        if kind not in KIND_DIRS:
            raise ArtifactError(f"unknown artifact kind {kind!r} (one of: {', '.join(KIND_DIRS)})")
        kind_dir = self.root / KIND_DIRS[kind]
        ids = []
        for child in kind_dir.iterdir():
            try:
                check_artifact_id(kind, child.name)
            except ArtifactError:
                continue
            if (child / MANIFEST_NAME).exists():
                ids.append(child.name)
        return sorted(ids)
