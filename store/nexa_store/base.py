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

from nexa import __version__
from nexa.contracts import ArtifactManifest, InputSource
from nexa.contracts.artifacts import KIND_DIRS
from nexa.ids import id_prefix, is_id

CODE_VERSION = f"nexa-forge {__version__}"
"""Written into every manifest: the release that made the artifact."""

# The id prefix each artifact kind is named by; teacher scratch state (distill)
# belongs to the job that made it.
KIND_ID_PREFIXES: dict[str, str] = {
    "dataset": "ds",
    "distill": "job",
    "checkpoint": "ckpt",
    "eval": "ev",
    "deployment": "dp",
    "log": "log",
}


RUN_RECORD_NAMES = ("result.json", "progress.json")


class ArtifactError(Exception):
    """Base for store errors."""


class ArtifactNotFound(ArtifactError):
    """No committed artifact (no manifest) under that id."""


class IntegrityError(ArtifactError):
    """A file is missing, extra, renamed, a symlink, or its hash or size differs from the manifest."""


class StoreUnavailable(ArtifactError):
    """The store could not be reached or refused the request (network, credentials, permissions)."""


def kind_for_id(artifact_id: str) -> str:
    """The artifact kind ``artifact_id`` names (``ds_…`` → dataset), or ``ArtifactError`` for anything else."""
    prefix = id_prefix(artifact_id)
    for kind, kind_prefix in KIND_ID_PREFIXES.items():
        if prefix == kind_prefix:
            return kind
    raise ArtifactError(f"not an artifact id: {artifact_id!r}")


def check_run_key(key: str) -> str:
    """``key`` if it names a run record (``runs/<job_id>/attempt-<n>/<name>.json``); else ``ArtifactError``."""
    parts = key.split("/")
    if (
        len(parts) != 4
        or parts[0] != "runs"
        or not is_id(parts[1], "job")
        or not parts[2].startswith("attempt-")
        or not parts[2][len("attempt-") :].isdigit()
        or parts[3] not in RUN_RECORD_NAMES
    ):
        raise ArtifactError(f"{key!r} is not a run record key")
    return key


def check_artifact_id(kind: str, artifact_id: str) -> None:
    """Raise ``ArtifactError`` unless ``kind`` is known and ``artifact_id`` is a well-formed id of it."""
    if kind not in KIND_DIRS:
        raise ArtifactError(f"unknown artifact kind {kind!r} (one of: {', '.join(KIND_DIRS)})")
    if id_prefix(artifact_id) != KIND_ID_PREFIXES[kind]:
        raise ArtifactError(
            f"{artifact_id!r} is not a {kind} id (expected {KIND_ID_PREFIXES[kind]}_ and 26 base32 characters)"
        )


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
        pipeline_id: str | None = None,
        inputs: list[InputSource] | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ArtifactManifest:
        """Hash, publish files, then write the manifest. Idempotent for identical content."""

    @abstractmethod
    def abort(self) -> None:
        """Discard the staged files (a no-op once committed or aborted)."""

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Leaving the block without committing (an exception, or a forgotten commit)
        # discards the staging directory; after a commit this is a no-op.
        self.abort()


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
    def verified_file(self, artifact_id: str, rel_path: str, scratch: Path) -> tuple[Path, bool]:
        """A local path holding one file's verified bytes, and whether it is a temporary copy.

        Memory stays flat whatever the size: the file is hashed as it streams. A
        local store answers its own file (``False``); others download it under
        ``scratch`` (``True``: the caller deletes it when done).
        """

    @abstractmethod
    def list_ids(self, kind: str) -> list[str]:
        """Committed artifact ids of ``kind``."""

    def write_run_record(self, key: str, data: bytes) -> None:
        """Write a run record (``runs/<job>/attempt-<n>/…``: an engine pod's result or progress).

        Where the operator reads it back, beside the artifacts; the record replaces any before it.
        """
        raise ArtifactError(f"{type(self).__name__} keeps no run records")

    def delete(self, artifact_id: str) -> bool:
        """Remove every file of ``artifact_id``, its manifest first, so readers never see a partial
        artifact; True when anything was there. Idempotent: deleting a missing artifact is no error.

        Not abstract: a store that cannot delete (a worker's view through the gateway) says so.
        """
        raise ArtifactError(f"{type(self).__name__} cannot delete artifacts")

    @abstractmethod
    def replace_manifest(self, manifest: ArtifactManifest) -> None:
        """Write a committed artifact's manifest anew (same files; a countersignature), atomically."""

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` (or ``ArtifactError``) unless the store answers a listing."""
        self.list_ids("dataset")
