"""The artifact store on an S3 bucket (MinIO, AWS S3, or any S3-compatible server).

Objects live at ``<prefix>/<kind dir>/<id>/<path>``. An engine writes into a
local staging directory; commit hashes every file, uploads the files, removes
objects a killed earlier attempt may have left under the same id, and uploads
``manifest.json`` last. A reader asks for the manifest first, so an upload
killed at any point is invisible: no manifest, no artifact.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3.exceptions
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from nexa.contracts import ArtifactManifest, FileEntry, InputSource
from nexa.contracts.artifacts import KIND_DIRS, MANIFEST_NAME
from nexa.storesettings import S3Location, split_endpoint
from nexa_store.base import (
    CODE_VERSION,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactWriter,
    IntegrityError,
    StoreUnavailable,
    check_artifact_id,
    check_run_key,
    kind_for_id,
)
from nexa_store.hashing import (
    CHUNK,
    compare_listing,
    find_entry,
    hash_tree,
    is_verified_copy,
    manifest_json,
    parse_manifest,
    same_files,
    sha256_bytes,
)
from nexa_store.signing import SignaturePolicy, SigningKey

_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
_DELETE_BATCH = 1000  # the most keys one S3 DeleteObjects request takes


class S3ArtifactWriter(ArtifactWriter):
    """A staged write into a local temporary directory; ``commit`` uploads it, manifest last."""

    def __init__(self, store: S3ArtifactStore, kind: str, artifact_id: str, path: Path) -> None:
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
        """Hash, upload every file, clear leftovers, upload the manifest; idempotent for identical files."""
        if self._done:
            raise ArtifactError(f"{self.artifact_id}: this writer was already committed or aborted")
        store = self.store
        try:
            entries = hash_tree(self.path)
            existing = store._load_manifest(self.artifact_id)
            if existing is not None:
                return self._accept_duplicate(existing, entries)
            for entry in entries:
                store._upload_file(store.object_key(self.artifact_id, entry.path), self.path / entry.path)
            store._remove_leftovers(self.artifact_id, {e.path for e in entries})
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
            manifest = store.policy.apply(ArtifactManifest.model_validate_json(draft.model_dump_json()))
            # A duplicate delivery may have finished while this one uploaded; never replace its manifest.
            existing = store._load_manifest(self.artifact_id)
            if existing is not None:
                return self._accept_duplicate(existing, entries)
            store._put_bytes(store.object_key(self.artifact_id, MANIFEST_NAME), manifest_json(manifest))
            return manifest
        finally:
            self.abort()

    def _accept_duplicate(self, existing: ArtifactManifest, entries: list[FileEntry]) -> ArtifactManifest:
        if not same_files(existing.files, entries):
            raise ArtifactError(
                f"{self.artifact_id} is already committed with different content; artifacts are never overwritten"
            )
        return existing

    def abort(self) -> None:
        """Discard the local staging directory (a no-op once committed or aborted)."""
        if not self._done:
            shutil.rmtree(self.path, ignore_errors=True)
            self._done = True


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects under ``s3://<bucket>/<prefix>/<kind dir>/<id>/``."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        prefix: str = "",
        region: str | None = None,
        *,
        signing_key: SigningKey | None = None,
        trusted_keys: list[str] | None = None,
        require_signature: bool = False,
    ) -> None:
        # Accept "http://host:9000" as well as "host:9000"; the scheme decides TLS.
        self.endpoint, secure = split_endpoint(endpoint, secure)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.secure = secure
        self.region = region
        self.root_uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.policy = SignaturePolicy(signing_key, list(trusted_keys or []), require_signature)
        try:
            location = S3Location(self.endpoint, bucket, self.prefix, secure, region, access_key, secret_key)
            self.client = location.client()
        except ValueError as exc:
            raise ArtifactError(f"invalid S3 endpoint {endpoint!r}: {exc}") from exc
        self._bucket_ready = False

    def for_bucket(self, bucket: str) -> S3ArtifactStore:
        """The same endpoint and credentials reading another bucket (data granted to a tenant)."""
        other = copy.copy(self)
        other.bucket = bucket
        other.prefix = ""
        other.root_uri = f"s3://{bucket}"
        other._bucket_ready = True  # never create someone else's bucket
        return other

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn client and network failures into ``StoreUnavailable`` naming the store and the action."""
        try:
            yield
        except S3Error as exc:
            raise StoreUnavailable(
                f"S3 store {self.endpoint}/{self.bucket}: {action} failed: {exc.code}: {exc.message}"
            ) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"S3 store {self.endpoint}/{self.bucket}: {action} failed: {exc}") from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._errors("creating the bucket"):
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket, location=self.region)
                except S3Error as exc:
                    # Another process created it between the check and the create.
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_ready = True

    def artifact_prefix(self, artifact_id: str) -> str:
        """The key prefix (ending in '/') under which the artifact's objects live."""
        kind = kind_for_id(artifact_id)
        parts = [self.prefix, KIND_DIRS[kind], artifact_id]
        return "/".join(p for p in parts if p) + "/"

    def object_key(self, artifact_id: str, rel_path: str) -> str:
        """The object key of one file of an artifact."""
        return self.artifact_prefix(artifact_id) + rel_path

    def _get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or ``None`` when it does not exist."""
        self._ensure_bucket()
        with self._errors(f"reading {key}"):
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def _put_bytes(self, key: str, data: bytes) -> None:
        self._ensure_bucket()
        with self._errors(f"writing {key}"):
            self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type="application/json"
            )

    def _upload_file(self, key: str, path: Path) -> None:
        self._ensure_bucket()
        with self._errors(f"uploading {key}"):
            self.client.fput_object(self.bucket, key, str(path))

    def _listing(self, artifact_id: str) -> dict[str, int]:
        """Every object under the artifact's prefix: relative path → size."""
        self._ensure_bucket()
        base = self.artifact_prefix(artifact_id)
        with self._errors(f"listing {base}"):
            return {
                obj.object_name[len(base) :]: obj.size or 0
                for obj in self.client.list_objects(self.bucket, prefix=base, recursive=True)
                if obj.object_name is not None
            }

    def _remove_leftovers(self, artifact_id: str, keep: set[str]) -> None:
        # Files a killed earlier attempt uploaded under this id but this commit does not have.
        for rel in sorted(set(self._listing(artifact_id)) - keep - {MANIFEST_NAME}):
            key = self.object_key(artifact_id, rel)
            with self._errors(f"removing leftover {key}"):
                self.client.remove_object(self.bucket, key)

    def _load_manifest(self, artifact_id: str) -> ArtifactManifest | None:
        data = self._get_bytes(self.object_key(artifact_id, MANIFEST_NAME))
        if data is None:
            return None
        manifest = parse_manifest(data, artifact_id, kind_for_id(artifact_id))
        self.policy.check(manifest)
        return manifest

    def download_object(self, key: str, dest: Path) -> tuple[str, int]:
        """Download one object of this bucket to ``dest``; its sha256 and size. ``ArtifactNotFound`` if absent."""
        self._ensure_bucket()
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with self._errors(f"downloading {key}"):
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    raise ArtifactNotFound(f"no object s3://{self.bucket}/{key}") from exc
                raise
            try:
                with dest.open("wb") as out:
                    for chunk in response.stream(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()
        return digest.hexdigest(), size

    def object_exists(self, key: str) -> bool:
        """True when ``key`` exists in this store's bucket."""
        self._ensure_bucket()
        with self._errors(f"checking {key}"):
            try:
                self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return False
                raise
        return True

    # -- the ArtifactStore interface --------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Endpoint, bucket, prefix and TLS flag (and region when set); never credentials."""
        info: dict[str, Any] = {
            "kind": "s3",
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "secure": self.secure,
        }
        if self.region:
            info["region"] = self.region
        return info

    def write_run_record(self, key: str, data: bytes) -> None:
        self._put_bytes("/".join(p for p in [self.prefix, check_run_key(key)] if p), data)

    def begin(self, kind: str, artifact_id: str) -> S3ArtifactWriter:
        """A writer whose ``path`` is a fresh local temporary directory."""
        check_artifact_id(kind, artifact_id)
        staging = Path(tempfile.mkdtemp(prefix=f"nexa-{artifact_id}-"))
        return S3ArtifactWriter(self, kind, artifact_id, staging)

    def uri(self, artifact_id: str) -> str:
        """``s3://bucket/prefix/<kind dir>/<id>``."""
        return f"s3://{self.bucket}/{self.artifact_prefix(artifact_id).rstrip('/')}"

    def exists(self, artifact_id: str) -> bool:
        """True when the artifact's manifest object exists."""
        return self.object_exists(self.object_key(artifact_id, MANIFEST_NAME))

    def read_manifest(self, artifact_id: str, *, verify: bool = True) -> ArtifactManifest:
        """The manifest; with ``verify``, exactly the listed objects must exist with matching size and sha256."""
        manifest = self._load_manifest(artifact_id)
        if manifest is None:
            raise ArtifactNotFound(f"no committed artifact {artifact_id} in {self.root_uri}")
        if verify:
            compare_listing(manifest, self._listing(artifact_id))
            for entry in manifest.files:
                self._verify_object(artifact_id, entry)
        return manifest

    def _verify_object(self, artifact_id: str, entry: FileEntry) -> None:
        key = self.object_key(artifact_id, entry.path)
        digest = hashlib.sha256()
        with self._errors(f"reading {key}"):
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    raise IntegrityError(f"{entry.path}: listed in the manifest but missing") from exc
                raise
            try:
                for chunk in response.stream(CHUNK):
                    digest.update(chunk)
            finally:
                response.close()
                response.release_conn()
        if digest.hexdigest() != entry.sha256:
            raise IntegrityError(f"{entry.path}: sha256 differs from the manifest")

    def fetch(self, artifact_id: str, dest: Path) -> Path:
        """Download the artifact into ``dest`` (with its manifest), verified; reuse a verified copy already there."""
        manifest = self.read_manifest(artifact_id, verify=False)
        compare_listing(manifest, self._listing(artifact_id))
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            if is_verified_copy(dest, manifest):
                return dest
            raise ArtifactError(f"cannot fetch {artifact_id} into {dest}: the directory is not empty")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            for entry in manifest.files:
                target = partial / entry.path
                digest, size = self.download_object(self.object_key(artifact_id, entry.path), target)
                if size != entry.size or digest != entry.sha256:
                    raise IntegrityError(f"{entry.path}: content differs from the manifest")
            (partial / MANIFEST_NAME).write_bytes(manifest_json(manifest))
            if dest.exists():
                dest.rmdir()
            os.rename(partial, dest)
        except ArtifactNotFound as exc:
            raise IntegrityError(f"{artifact_id}: a listed file vanished during download: {exc}") from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return dest

    def delete(self, artifact_id: str) -> bool:
        """Remove the manifest first (the artifact is gone for readers from then on), then every object
        under the artifact's prefix, listed page by page and removed 1,000 keys a request. A missing
        artifact is no error; a delete cut short is finished by deleting again."""
        self._ensure_bucket()
        base = self.artifact_prefix(artifact_id)
        manifest_key = self.object_key(artifact_id, MANIFEST_NAME)
        existed = self.object_exists(manifest_key)
        with self._errors(f"removing {manifest_key}"):
            self.client.remove_object(self.bucket, manifest_key)  # S3 answers success for a missing key
        with self._errors(f"removing the objects under {base}"):
            listing = self.client.list_objects(self.bucket, prefix=base, recursive=True)
            while True:
                batch = [
                    DeleteObject(obj.object_name)
                    for obj in itertools.islice(listing, _DELETE_BATCH)
                    if obj.object_name is not None
                ]
                if not batch:
                    break
                existed = True
                # remove_objects is lazy: iterating it sends the request and yields what failed.
                failed = list(self.client.remove_objects(self.bucket, batch))
                if failed:
                    raise StoreUnavailable(
                        f"S3 store {self.endpoint}/{self.bucket}: removing {len(failed)} objects under "
                        f"{base} failed: {failed[0].code}: {failed[0].message}"
                    )
        return existed

    def replace_manifest(self, manifest: ArtifactManifest) -> None:
        """Put ``manifest.json`` again (one PUT: readers see the old or the new object)."""
        key = self.object_key(manifest.artifact_id, MANIFEST_NAME)
        if not self.object_exists(key):
            raise ArtifactNotFound(f"no committed artifact {manifest.artifact_id} in {self.root_uri}")
        self._put_bytes(key, manifest_json(manifest))

    def read_file(self, artifact_id: str, rel_path: str) -> bytes:
        """One listed file's bytes after checking its size and sha256 against the manifest."""
        manifest = self.read_manifest(artifact_id, verify=False)
        entry = find_entry(manifest, rel_path)
        if entry is None:
            raise ArtifactNotFound(f"{artifact_id} has no file {rel_path!r}")
        data = self._get_bytes(self.object_key(artifact_id, entry.path))
        if data is None:
            raise IntegrityError(f"{entry.path}: listed in the manifest but missing")
        if len(data) != entry.size or sha256_bytes(data) != entry.sha256:
            raise IntegrityError(f"{entry.path}: content differs from the manifest")
        return data

    def verified_file(self, artifact_id: str, rel_path: str, scratch: Path) -> tuple[Path, bool]:
        """Download one listed file under ``scratch``, hashing as it streams; a temporary copy."""
        manifest = self.read_manifest(artifact_id, verify=False)
        entry = find_entry(manifest, rel_path)
        if entry is None:
            raise ArtifactNotFound(f"{artifact_id} has no file {rel_path!r}")
        scratch.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".download-", dir=scratch)
        os.close(handle)
        target = Path(name)
        try:
            digest, size = self.download_object(self.object_key(artifact_id, entry.path), target)
            if size != entry.size or digest != entry.sha256:
                raise IntegrityError(f"{entry.path}: content differs from the manifest")
        except ArtifactNotFound as exc:
            target.unlink(missing_ok=True)
            raise IntegrityError(f"{entry.path}: listed in the manifest but missing") from exc
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target, True

    def list_ids(self, kind: str) -> list[str]:
        """Committed ids of ``kind`` (prefixes with a manifest object), sorted."""
        if kind not in KIND_DIRS:
            raise ArtifactError(f"unknown artifact kind {kind!r} (one of: {', '.join(KIND_DIRS)})")
        self._ensure_bucket()
        base = "/".join(p for p in [self.prefix, KIND_DIRS[kind]] if p) + "/"
        with self._errors(f"listing {base}"):
            names = [
                obj.object_name[len(base) :].rstrip("/")
                for obj in self.client.list_objects(self.bucket, prefix=base, recursive=False)
                if obj.is_dir and obj.object_name is not None
            ]
        ids = []
        for name in names:
            try:
                check_artifact_id(kind, name)
            except ArtifactError:
                continue
            if self.exists(name):
                ids.append(name)
        return sorted(ids)
