"""Dataset references: which ``dataset_uri`` values a job may name, and how an engine reads one.

The gateway calls ``check_dataset_ref`` at submit time, so a bad reference is a
clear 422 before any worker sees the job; an engine calls ``fetch_dataset`` to
get a verified local file. Accepted forms:

``ds_<id>``
    A dataset artifact in the store. Convention: the artifact directory holds
    exactly one data file named ``data.parquet``, ``data.jsonl`` or ``data.csv``
    (uploads and every engine that outputs a dataset write it under that name),
    beside any other files (reports) and ``manifest.json``.
``s3://<bucket>/<key>``
    An object in the S3 artifact store's own bucket, outside the store's
    artifact directories (stored datasets are named by id, not by key).
absolute local path, or ``file://`` URI
    Only when the real path (symlinks resolved) is under one of the server's
    allowed roots; no allowed roots means no local paths at all. A regular file,
    or a directory holding ``.parquet`` files (read as one parquet dataset).

Formats come from the extension (any case): ``.parquet``; ``.jsonl``, ``.jsonl.gz``
and ``.json`` (read as JSON Lines, one object per line); ``.csv``. Store failures
(``StoreUnavailable``) are not reference errors and propagate as they are.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlsplit

from nexa.contracts.artifacts import KIND_DIRS, MANIFEST_NAME
from nexa.ids import is_id
from nexa_engines.store.base import ArtifactNotFound, ArtifactStore, IntegrityError
from nexa_engines.store.hashing import sha256_file

DatasetFormat = Literal["parquet", "jsonl", "csv"]
DatasetErrorCode = Literal[
    "dataset_not_found", "dataset_not_allowed", "dataset_unreadable", "invalid_dataset_uri"
]

# Longest suffix first, so ".jsonl.gz" wins over a bare ".gz".
_EXTENSIONS: tuple[tuple[str, DatasetFormat], ...] = (
    (".jsonl.gz", "jsonl"),
    (".parquet", "parquet"),
    (".jsonl", "jsonl"),
    (".json", "jsonl"),
    (".csv", "csv"),
)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ACCEPTED = "a dataset id (ds_…), s3://bucket/key, or an absolute path under an allowed root"


class DatasetRefError(Exception):
    """A dataset reference that cannot be used; ``code`` is the API error type, ``message`` is for the user."""

    def __init__(self, code: DatasetErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ResolvedDataset:
    """A dataset an engine can read: a local file (or parquet directory) and what it is."""

    path: Path
    format: DatasetFormat
    uri: str
    sha256: str
    artifact_id: str | None = None


@dataclass(frozen=True)
class _StoreRef:
    artifact_id: str


@dataclass(frozen=True)
class _S3Ref:
    bucket: str
    key: str
    format: DatasetFormat


@dataclass(frozen=True)
class _LocalRef:
    path: Path  # real path, symlinks resolved
    format: DatasetFormat
    is_dir: bool


def detect_format(name: str) -> DatasetFormat:
    """The dataset format a file name's extension says; ``DatasetRefError`` for any other extension."""
    lowered = name.lower()
    for suffix, fmt in _EXTENSIONS:
        if lowered.endswith(suffix):
            return fmt
    raise DatasetRefError(
        "invalid_dataset_uri",
        f"{name!r} is not a supported dataset file: use .parquet, .jsonl, .jsonl.gz, .json or .csv",
    )


def check_dataset_ref(uri: str, *, store: ArtifactStore, allowed_roots: list[Path]) -> None:
    """Return if ``uri`` names a dataset this server may read and that exists; else raise ``DatasetRefError``."""
    _parse(uri, store, allowed_roots)


def fetch_dataset(
    uri: str, *, store: ArtifactStore, allowed_roots: list[Path], workdir: Path
) -> ResolvedDataset:
    """A local, verified copy (or the file itself, for local paths) of the dataset ``uri`` names."""
    ref = _parse(uri, store, allowed_roots)
    if isinstance(ref, _StoreRef):
        return _fetch_artifact(uri, ref.artifact_id, store, workdir)
    if isinstance(ref, _S3Ref):
        return _fetch_s3(uri, ref, store, workdir)
    digest = _tree_sha256(ref.path) if ref.is_dir else sha256_file(ref.path)[0]
    return ResolvedDataset(path=ref.path, format=ref.format, uri=uri, sha256=digest)


def _parse(uri: str, store: ArtifactStore, allowed_roots: list[Path]) -> _StoreRef | _S3Ref | _LocalRef:
    text = uri.strip()
    if not text or "\x00" in text:
        raise DatasetRefError(
            "invalid_dataset_uri", f"dataset_uri is empty or malformed; expected {_ACCEPTED}"
        )
    if text.startswith("ds_"):
        return _parse_dataset_id(text, store)
    if text.startswith("s3://"):
        return _parse_s3(text, store)
    if text.startswith("file:"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise DatasetRefError(
                "invalid_dataset_uri", f"{uri!r}: only file:///absolute/path URIs are accepted"
            )
        return _parse_local(unquote(parts.path), uri, store, allowed_roots)
    if _SCHEME_RE.match(text):
        raise DatasetRefError("invalid_dataset_uri", f"{uri!r}: unsupported URI scheme; expected {_ACCEPTED}")
    return _parse_local(text, uri, store, allowed_roots)


def _parse_dataset_id(text: str, store: ArtifactStore) -> _StoreRef:
    if not is_id(text, "ds"):
        raise DatasetRefError("invalid_dataset_uri", f"{text!r} is not a valid dataset id")
    if not store.exists(text):
        raise DatasetRefError("dataset_not_found", f"dataset {text} does not exist")
    return _StoreRef(text)


def _parse_s3(text: str, store: ArtifactStore) -> _S3Ref:
    from nexa_engines.store.s3 import S3ArtifactStore

    bucket, _, key = text[len("s3://") :].partition("/")
    if not _BUCKET_RE.match(bucket) or not key or key.endswith("/") or ".." in key.split("/"):
        raise DatasetRefError("invalid_dataset_uri", f"{text!r}: expected s3://bucket/path/to/file.parquet")
    fmt = detect_format(key)
    if not isinstance(store, S3ArtifactStore) or store.bucket != bucket:
        readable = f"s3://{store.bucket}/…" if isinstance(store, S3ArtifactStore) else "no S3 bucket"
        raise DatasetRefError(
            "dataset_not_allowed",
            f"{text!r}: this server reads only its artifact store's bucket ({readable}); upload the file instead",
        )
    for kind_dir in KIND_DIRS.values():
        area = "/".join(p for p in (store.prefix, kind_dir) if p) + "/"
        if key.startswith(area):
            raise DatasetRefError(
                "dataset_not_allowed",
                f"{text!r} is inside the artifact store; refer to a stored dataset by its ds_ id",
            )
    if not store.object_exists(key):
        raise DatasetRefError("dataset_not_found", f"{text} does not exist")
    return _S3Ref(bucket, key, fmt)


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _parse_local(raw: str, uri: str, store: ArtifactStore, allowed_roots: list[Path]) -> _LocalRef:
    candidate = PurePosixPath(raw)
    if not candidate.is_absolute() or ".." in candidate.parts:
        raise DatasetRefError(
            "invalid_dataset_uri",
            f"{uri!r}: a local path must be absolute, without '..'; expected {_ACCEPTED}",
        )
    if not allowed_roots:
        raise DatasetRefError(
            "dataset_not_allowed",
            f"{uri!r}: this server reads no local paths; upload the file (POST /v1/datasets) and use its ds_ id",
        )
    roots = [Path(os.path.realpath(root)) for root in allowed_roots]
    real = Path(os.path.realpath(raw))
    # Containment is decided on the real path, before existence, so nothing is said about files outside the roots.
    if not any(_is_under(real, root) for root in roots):
        raise DatasetRefError(
            "dataset_not_allowed",
            f"{uri!r} is outside the directories this server may read ({', '.join(str(r) for r in roots)})",
        )
    info = store.describe()
    store_root = info.get("root") if info.get("kind") == "local" else None
    if store_root and _is_under(real, Path(os.path.realpath(store_root))):
        raise DatasetRefError(
            "dataset_not_allowed",
            f"{uri!r} is inside the artifact store; refer to a stored dataset by its ds_ id",
        )
    try:
        mode = real.stat().st_mode
    except FileNotFoundError as exc:
        raise DatasetRefError("dataset_not_found", f"{uri!r} does not exist") from exc
    except OSError as exc:
        raise DatasetRefError("dataset_unreadable", f"{uri!r} cannot be read: {exc.strerror}") from exc
    if stat.S_ISDIR(mode):
        _check_parquet_dir(real, uri, roots)
        return _LocalRef(real, "parquet", is_dir=True)
    if not stat.S_ISREG(mode):
        raise DatasetRefError("dataset_unreadable", f"{uri!r} is not a regular file")
    fmt = detect_format(PurePosixPath(raw).name)
    _check_readable(real, uri)
    return _LocalRef(real, fmt, is_dir=False)


def _check_readable(path: Path, uri: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise DatasetRefError("dataset_unreadable", f"{uri!r} cannot be read: {exc.strerror}") from exc


def _parquet_files(directory: Path) -> list[Path]:
    # Hidden and underscore files (_SUCCESS, .crc) are writer bookkeeping, skipped like pyarrow does.
    return sorted(
        p
        for p in directory.rglob("*")
        if p.name.lower().endswith(".parquet") and not p.name.startswith(("_", "."))
    )


def _check_parquet_dir(directory: Path, uri: str, roots: list[Path]) -> None:
    files = _parquet_files(directory)
    if not files:
        raise DatasetRefError("dataset_unreadable", f"{uri!r} is a directory without .parquet files")
    for path in files:
        real = Path(os.path.realpath(path))
        if not any(_is_under(real, root) for root in roots):
            raise DatasetRefError(
                "dataset_not_allowed",
                f"{uri!r}: {path.relative_to(directory)} links outside the allowed directories",
            )
        if not real.is_file():
            raise DatasetRefError(
                "dataset_unreadable", f"{uri!r}: {path.relative_to(directory)} is not a regular file"
            )
        _check_readable(real, uri)


def _tree_sha256(directory: Path) -> str:
    # A parquet directory's hash: sha256 over "<file sha256>  <relative path>\n" lines, sorted by path.
    digest = hashlib.sha256()
    for path in _parquet_files(directory):
        file_hash, _ = sha256_file(Path(os.path.realpath(path)))
        digest.update(f"{file_hash}  {path.relative_to(directory).as_posix()}\n".encode())
    return digest.hexdigest()


def _fetch_artifact(uri: str, artifact_id: str, store: ArtifactStore, workdir: Path) -> ResolvedDataset:
    try:
        manifest = store.read_manifest(artifact_id, verify=False)
    except ArtifactNotFound as exc:
        raise DatasetRefError("dataset_not_found", f"dataset {artifact_id} does not exist") from exc
    except IntegrityError as exc:
        raise DatasetRefError(
            "dataset_unreadable", f"dataset {artifact_id} failed verification: {exc}"
        ) from exc
    data_files = []
    for entry in manifest.files:
        if "/" in entry.path or not entry.path.startswith("data.") or entry.path == MANIFEST_NAME:
            continue
        try:
            data_files.append((entry, detect_format(entry.path)))
        except DatasetRefError:
            continue
    if len(data_files) != 1:
        raise DatasetRefError(
            "dataset_unreadable",
            f"dataset {artifact_id} must hold exactly one data file (data.parquet, data.jsonl or data.csv); "
            f"it holds {len(data_files)}",
        )
    entry, fmt = data_files[0]
    try:
        directory = store.fetch(artifact_id, workdir / artifact_id)
    except ArtifactNotFound as exc:
        raise DatasetRefError("dataset_not_found", f"dataset {artifact_id} does not exist") from exc
    except IntegrityError as exc:
        raise DatasetRefError(
            "dataset_unreadable", f"dataset {artifact_id} failed verification: {exc}"
        ) from exc
    return ResolvedDataset(
        path=directory / entry.path, format=fmt, uri=uri, sha256=entry.sha256, artifact_id=artifact_id
    )


def _fetch_s3(uri: str, ref: _S3Ref, store: ArtifactStore, workdir: Path) -> ResolvedDataset:
    from nexa_engines.store.s3 import S3ArtifactStore

    if not isinstance(store, S3ArtifactStore):  # _parse_s3 already refused this; kept for the type checker
        raise DatasetRefError("dataset_not_allowed", f"{uri!r}: this server has no S3 artifact store")
    # The URI's hash in the name keeps two inputs with the same base name apart.
    name = f"{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{PurePosixPath(ref.key).name}"
    dest = workdir / "inputs" / name
    try:
        digest, _ = store.download_object(ref.key, dest)
    except ArtifactNotFound as exc:
        raise DatasetRefError("dataset_not_found", f"{uri} does not exist") from exc
    return ResolvedDataset(path=dest, format=ref.format, uri=uri, sha256=digest)
