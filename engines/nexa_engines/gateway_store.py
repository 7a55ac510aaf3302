"""The artifact store as a worker without storage credentials sees it: through its gateway.

Every call names the job and attempt the worker runs; the gateway answers only
for the job's tenant and only while the attempt holds its lease (see
``nexa_gateway.services.worker_store``). The gateway is trusted for *which*
artifact it hands over, never for the bytes: every file is hashed here against
its manifest before an engine sees it, as with the other backends.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from nexa.contracts import ArtifactManifest, InputSource
from nexa.contracts.artifacts import MANIFEST_NAME
from nexa_store.base import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactWriter,
    IntegrityError,
    StoreUnavailable,
    check_artifact_id,
    kind_for_id,
)
from nexa_store.hashing import (
    find_entry,
    is_verified_copy,
    manifest_json,
    parse_manifest,
    sha256_file,
    walk_files,
)

COMMIT_MEMBER = ".nexa-commit.json"


class StoreTransport(Protocol):
    """What the store needs of the worker's client (``WorkerClient.store_call``)."""

    def store_call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any],
        upload: Path | None = None,
        download: Path | None = None,
    ) -> httpx.Response: ...


def _message(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
        return str(error.get("type", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", response.text[:300]


class GatewayArtifactWriter(ArtifactWriter):
    """Stages files locally; ``commit`` uploads them as one tar stream and the gateway writes the manifest."""

    def __init__(self, store: GatewayArtifactStore, kind: str, artifact_id: str, path: Path) -> None:
        self.store = store
        self.kind = kind
        self.artifact_id = artifact_id
        self.path = path
        self._manifest: ArtifactManifest | None = None

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
        """Upload and commit; job, attempt and tenant are the gateway's to set, whatever is passed here."""
        if self._manifest is not None:
            return self._manifest
        files = walk_files(self.path)  # refuses symlinks and special files, as the other backends do
        fields = {
            "inputs": [i.model_dump(mode="json") for i in inputs or []],
            "config": config,
            "metrics": metrics,
        }
        archive = self.path.parent / f"{self.path.name}.tar"
        try:
            with tarfile.open(archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel, full in sorted(files.items()):
                    tar.add(full, arcname=rel, recursive=False)
                blob = json.dumps(fields, default=str).encode()
                info = tarfile.TarInfo(COMMIT_MEMBER)
                info.size = len(blob)
                tar.addfile(info, _BytesReader(blob))
            response = self.store.call(
                "PUT",
                f"/artifacts/{quote(self.artifact_id)}",
                params={"kind": self.kind},
                upload=archive,
            )
        finally:
            archive.unlink(missing_ok=True)
        if response.status_code != 201:
            raise self.store.error(response, f"committing {self.artifact_id}")
        manifest = parse_manifest(response.content, self.artifact_id, self.kind)
        self._manifest = manifest
        shutil.rmtree(self.path, ignore_errors=True)
        return manifest

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk = self._data[self._offset : end]
        self._offset += len(chunk)
        return chunk


class GatewayArtifactStore(ArtifactStore):
    """Artifacts of one job attempt's tenant, read and written through the gateway."""

    root_uri = "internal://"

    def __init__(self, transport: StoreTransport, job_id: str, attempt: int, scratch: Path) -> None:
        self.transport = transport
        self.job_id = job_id
        self.attempt = attempt
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._manifests: dict[str, ArtifactManifest] = {}

    # -- plumbing ---------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        upload: Path | None = None,
        download: Path | None = None,
    ) -> httpx.Response:
        try:
            return self.transport.store_call(
                method,
                f"/v1/workers/jobs/{quote(self.job_id)}/store{path}",
                params={"attempt": self.attempt, **(params or {})},
                upload=upload,
                download=download,
            )
        except ArtifactError:
            raise
        except Exception as exc:  # the client's own errors: gateway unreachable past the deadline
            raise StoreUnavailable(f"the gateway's artifact store: {exc}") from exc

    def error(self, response: httpx.Response, action: str) -> ArtifactError:
        kind, message = _message(response)
        text = f"{action}: {message or kind or response.status_code}"
        if response.status_code == 404:
            return ArtifactNotFound(text)
        if kind == "artifact_corrupt":
            return IntegrityError(text)
        if kind == "stale_attempt":
            return StoreUnavailable(f"{text} (this attempt no longer holds the job)")
        return ArtifactError(text)

    def _temp(self) -> Path:
        handle, name = tempfile.mkstemp(prefix=".download-", dir=self.scratch)
        os.close(handle)
        return Path(name)

    def _download(self, artifact_id: str, rel_path: str, target: Path) -> None:
        """One listed file into ``target``, checked against the manifest's size and hash."""
        manifest = self.read_manifest(artifact_id, verify=False)
        entry = find_entry(manifest, rel_path)
        if entry is None:
            raise ArtifactNotFound(f"{artifact_id} has no file {rel_path!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        response = self.call(
            "GET", f"/artifacts/{quote(artifact_id)}/files/{quote(entry.path)}", download=target
        )
        if response.status_code != 200:
            raise self.error(response, f"reading {artifact_id}/{entry.path}")
        digest, size = sha256_file(target, entry.path)
        if size != entry.size or digest != entry.sha256:
            raise IntegrityError(f"{artifact_id}/{entry.path}: content differs from the manifest")

    # -- the ArtifactStore interface --------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"kind": "gateway"}

    def begin(self, kind: str, artifact_id: str) -> GatewayArtifactWriter:
        check_artifact_id(kind, artifact_id)
        staging = Path(tempfile.mkdtemp(prefix=f"{artifact_id}.", dir=self.scratch))
        return GatewayArtifactWriter(self, kind, artifact_id, staging)

    def uri(self, artifact_id: str) -> str:
        return f"internal://{artifact_id}"

    def exists(self, artifact_id: str) -> bool:
        try:
            self.read_manifest(artifact_id, verify=False)
        except ArtifactNotFound:
            return False
        return True

    def read_manifest(self, artifact_id: str, *, verify: bool = True) -> ArtifactManifest:
        kind = kind_for_id(artifact_id)
        manifest = self._manifests.get(artifact_id)
        if manifest is None:
            response = self.call("GET", f"/artifacts/{quote(artifact_id)}/manifest")
            if response.status_code != 200:
                raise self.error(response, f"reading the manifest of {artifact_id}")
            manifest = parse_manifest(response.content, artifact_id, kind)
            # Committed manifests change only by a countersignature, which workers do not read.
            self._manifests[artifact_id] = manifest
        if verify:
            for entry in manifest.files:
                target = self._temp()
                try:
                    self._download(artifact_id, entry.path, target)
                finally:
                    target.unlink(missing_ok=True)
        return manifest

    def fetch(self, artifact_id: str, dest: Path) -> Path:
        manifest = self.read_manifest(artifact_id, verify=False)
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            if is_verified_copy(dest, manifest):
                return dest
            raise ArtifactError(f"cannot fetch {artifact_id} into {dest}: the directory is not empty")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            for entry in manifest.files:
                self._download(artifact_id, entry.path, partial / entry.path)
            (partial / MANIFEST_NAME).write_bytes(manifest_json(manifest))
            if dest.exists():
                dest.rmdir()
            os.rename(partial, dest)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return dest

    def read_file(self, artifact_id: str, rel_path: str) -> bytes:
        target = self._temp()
        try:
            self._download(artifact_id, rel_path, target)
            return target.read_bytes()
        finally:
            target.unlink(missing_ok=True)

    def verified_file(self, artifact_id: str, rel_path: str, scratch: Path) -> tuple[Path, bool]:
        scratch.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".download-", dir=scratch)
        os.close(handle)
        target = Path(name)
        try:
            self._download(artifact_id, rel_path, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target, True

    def list_ids(self, kind: str) -> list[str]:
        response = self.call("GET", "/artifacts", params={"kind": kind})
        if response.status_code != 200:
            raise self.error(response, f"listing {kind} artifacts")
        return [str(i) for i in response.json().get("ids", [])]

    def replace_manifest(self, manifest: ArtifactManifest) -> None:
        raise ArtifactError("manifests are rewritten by the platform only, not through a worker")
