"""The artifact store interface shared by the local-directory and S3 backends.

Writes are staged: an engine asks for a writer, puts files under
``writer.path`` (an ordinary local directory), then calls ``commit``. Commit
hashes every file, publishes the files, and writes ``manifest.json`` last, so a
reader never sees a manifest whose files are not all there. An interrupted
write leaves no manifest, and a directory without a manifest is never read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from nexa.contracts import ArtifactManifest, InputSource


class ArtifactError(Exception):
    """Base for store errors."""


class ArtifactNotFound(ArtifactError):
    """No committed artifact (no manifest) under that id."""


class IntegrityError(ArtifactError):
    """A file is missing, extra, renamed, a symlink, or its hash or size differs from the manifest."""


class ArtifactWriter(ABC):
    """A staged artifact; nothing is visible to readers until ``commit``."""

    artifact_id: str
    kind: str
    path: Path  # local staging directory the engine writes into

    @abstractmethod
    def commit(
        self,
        *,
        job_id: str | None = None,
        attempt: int | None = None,
        tenant_id: str | None = None,
        inputs: list[InputSource] | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ArtifactManifest:
        """Hash, publish files, then write the manifest. Idempotent for identical content."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the staged files."""


class ArtifactStore(ABC):
    """One interface, two backends (local directory, S3/MinIO)."""

    root_uri: str  # e.g. "/home/me/.nexa/artifacts" or "s3://bucket/prefix"

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Connection info a worker needs to open the same store (no secrets)."""

    @abstractmethod
    def begin(self, kind: str, artifact_id: str) -> ArtifactWriter:
        """Start a staged write of artifact ``artifact_id`` of ``kind``."""

    @abstractmethod
    def uri(self, artifact_id: str) -> str:
        """Where the artifact lives (whether or not it exists yet)."""

    @abstractmethod
    def exists(self, artifact_id: str) -> bool:
        """True when the artifact has a manifest."""

    @abstractmethod
    def read_manifest(self, artifact_id: str, *, verify: bool = True) -> ArtifactManifest:
        """The manifest; with ``verify`` every file's presence, size and sha256 are checked."""

    @abstractmethod
    def fetch(self, artifact_id: str, dest: Path) -> Path:
        """A verified local copy of the artifact directory (the directory itself for local stores)."""

    @abstractmethod
    def read_file(self, artifact_id: str, rel_path: str) -> bytes:
        """One file's bytes, verified against the manifest."""

    @abstractmethod
    def list_ids(self, kind: str) -> list[str]:
        """Committed artifact ids of ``kind``."""
