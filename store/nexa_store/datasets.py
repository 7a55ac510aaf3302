"""Dataset references: which ``dataset_uri`` values a job may name, and how an engine reads one.

The gateway calls ``check_dataset_ref`` at submit time, so a bad reference is a
clear 422 before any worker sees the job; an engine calls ``fetch_dataset`` to
get a verified local file. Accepted forms:

``ds_<id>`` or ``internal://ds_<id>``
    A dataset artifact in the store, owned by the job's tenant (another tenant's
    reads as not found). Convention: the artifact directory holds exactly one
    data file, ``<stem>.parquet``, ``.jsonl`` or ``.csv`` with a stem of
    ``DATA_FILE_STEMS`` (uploads write ``data.*``, an audit ``scored.parquet``, a
    distill or generate ``sft.parquet``, as the SPEC names them), beside any other
    files (reports) and ``manifest.json``.
``s3://<bucket>/<key>``
    An object in a bucket granted to the tenant, outside the store's artifact
    directories (stored datasets are named by id, not by key).
``hf://datasets/<owner>/<name>/<file>``
    A file of a public Hugging Face dataset repository (the local hub cache when
    ``HF_HUB_OFFLINE=1``).
absolute local path, or ``file://`` URI
    Only when the real path (symlinks resolved) is under a local root granted to
    the tenant on this server, and outside the artifact store and Nexa's own state.
    A regular file, or a directory holding ``.parquet`` files (read as one parquet
    dataset; every file is re-checked where its symlinks lead).

Who may read what is decided by ``nexa_store.access``; this module parses
and fetches. Formats come from the extension (any case): ``.parquet``; ``.jsonl``, ``.jsonl.gz``
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

from nexa.contracts.artifacts import MANIFEST_NAME
from nexa.contracts.refs import ARTIFACT_SCHEME
from nexa.ids import is_id
from nexa_store.access import (
    Access,
    AccessDenied,
    check_artifact,
    check_bucket,
    check_scanned_file,
    local_path,
)
from nexa_store.base import ArtifactNotFound, ArtifactStore, IntegrityError
from nexa_store.hashing import sha256_file
from nexa_store.pinned import PinError, pin_view

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
# The widest dataset read or uploaded: Arrow's memory grows with columns, not just bytes.
MAX_DATASET_COLUMNS = 4096
# Names a dataset artifact's one data file may have (before its extension).
DATA_FILE_STEMS = ("data", "scored", "sft")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ACCEPTED = "a dataset id (ds_…), s3://bucket/key, hf://datasets/…, or an absolute path under a granted root"


class DatasetRefError(AccessDenied):
    """A dataset reference that cannot be used; ``code`` is the API error type, ``message`` is for the user."""

    def __init__(self, code: DatasetErrorCode | str, message: str) -> None:
        super().__init__(code, message)


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
    name: str = ""  # the name the user gave (its extension decides the format)


@dataclass(frozen=True)
class _HubRef:
    repo_id: str
    filename: str
    format: DatasetFormat


def is_data_file(path: str) -> bool:
    """True for a dataset artifact's data file name (``data.parquet``, ``scored.parquet``, ``sft.parquet`` …)."""
    stem, dot, _ext = path.partition(".")
    return bool(dot) and "/" not in path and stem in DATA_FILE_STEMS


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


def check_dataset_ref(uri: str, *, store: ArtifactStore, access: Access) -> None:
    """Return if ``uri`` names a dataset this job's tenant may read and that exists; else raise ``DatasetRefError``."""
    _parse(uri, store, access)


def fetch_dataset(uri: str, *, store: ArtifactStore, access: Access, workdir: Path) -> ResolvedDataset:
    """A local, verified copy (or the file itself, for local paths) of the dataset ``uri`` names."""
    ref = _parse(uri, store, access)
    if isinstance(ref, _StoreRef):
        return _fetch_artifact(uri, ref.artifact_id, store, workdir)
    if isinstance(ref, _S3Ref):
        return _fetch_s3(uri, ref, store, workdir)
    if isinstance(ref, _HubRef):
        return _fetch_hub(uri, ref)
    # Engines read a private view of descriptors opened as the files were checked
    # (nexa_store.pinned): a name swapped for a link after this check is never followed.
    view = workdir / "inputs" / f"{hashlib.sha256(uri.encode()).hexdigest()[:12]}-view"
    if ref.is_dir:
        files = _vetted_parquet_files(ref.path, uri, access)
        _pin(view, files, uri)
        return ResolvedDataset(
            path=view, format="parquet", uri=uri, sha256=_tree_sha256([(rel, view / rel) for rel, _ in files])
        )
    name = PurePosixPath(ref.name or ref.path.name)
    path = _pin(view, [(name, ref.path)], uri) / name
    return ResolvedDataset(path=path, format=ref.format, uri=uri, sha256=_view_sha256(path))


def _pin(view: Path, files: list[tuple[PurePosixPath, Path]], uri: str) -> Path:
    try:
        return pin_view(view, files)
    except PinError as exc:
        raise DatasetRefError("dataset_unreadable", f"{uri!r}: {exc}") from exc


def _parse(uri: str, store: ArtifactStore, access: Access) -> _StoreRef | _S3Ref | _LocalRef | _HubRef:
    text = uri.strip()
    if not text or "\x00" in text:
        raise DatasetRefError(
            "invalid_dataset_uri", f"dataset_uri is empty or malformed; expected {_ACCEPTED}"
        )
    if text.startswith(ARTIFACT_SCHEME):
        text = text[len(ARTIFACT_SCHEME) :].strip("/")
        if not text.startswith("ds_"):
            raise DatasetRefError("invalid_dataset_uri", f"{uri!r}: {ARTIFACT_SCHEME} must name a ds_ id")
    if text.startswith("ds_"):
        return _parse_dataset_id(text, store, access)
    if text.startswith("s3://"):
        return _parse_s3(text, store, access)
    if text.startswith("hf://"):
        return _parse_hub(text)
    if text.startswith("file:"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise DatasetRefError(
                "invalid_dataset_uri", f"{uri!r}: only file:///absolute/path URIs are accepted"
            )
        return _parse_local(unquote(parts.path), uri, access)
    if _SCHEME_RE.match(text):
        raise DatasetRefError("invalid_dataset_uri", f"{uri!r}: unsupported URI scheme; expected {_ACCEPTED}")
    return _parse_local(text, uri, access)


def _parse_dataset_id(text: str, store: ArtifactStore, access: Access) -> _StoreRef:
    if not is_id(text, "ds"):
        raise DatasetRefError("invalid_dataset_uri", f"{text!r} is not a valid dataset id")
    try:
        check_artifact(access, store, text, "dataset")
    except AccessDenied as exc:
        raise DatasetRefError(exc.code, exc.message) from exc
    if not store.exists(text):
        raise DatasetRefError("dataset_not_found", f"dataset {text} not found")
    return _StoreRef(text)


def _parse_hub(text: str) -> _HubRef:
    # hf://datasets/<owner>/<name>/<path/in/repo>: public data, read through the hub cache.
    parts = [p for p in text[len("hf://") :].split("/") if p]
    if len(parts) < 4 or parts[0] != "datasets" or any(p in (".", "..") for p in parts):
        raise DatasetRefError(
            "invalid_dataset_uri", f"{text!r}: expected hf://datasets/<owner>/<name>/<file in the repo>"
        )
    filename = "/".join(parts[3:])
    return _HubRef(f"{parts[1]}/{parts[2]}", filename, detect_format(filename))


def _parse_s3(text: str, store: ArtifactStore, access: Access) -> _S3Ref:
    from nexa_store.s3 import S3ArtifactStore

    bucket, _, key = text[len("s3://") :].partition("/")
    if not _BUCKET_RE.match(bucket) or not key or key.endswith("/") or ".." in key.split("/"):
        raise DatasetRefError("invalid_dataset_uri", f"{text!r}: expected s3://bucket/path/to/file.parquet")
    fmt = detect_format(key)
    try:
        check_bucket(access, bucket, "dataset", text)
    except AccessDenied as exc:
        raise DatasetRefError(exc.code, exc.message) from exc
    if not isinstance(store, S3ArtifactStore):
        raise DatasetRefError(
            "dataset_not_allowed", f"{text!r}: this server has no S3 endpoint; upload the file instead"
        )
    if bucket == store.bucket and (
        not store.prefix or key == store.prefix or key.startswith(store.prefix + "/")
    ):
        # Everything under the store's prefix is Nexa's own (artifacts, run records): never by key.
        raise DatasetRefError(
            "dataset_not_allowed",
            f"{text!r} is inside the artifact store; refer to a stored dataset by its ds_ id",
        )
    source = store if bucket == store.bucket else store.for_bucket(bucket)
    if not source.object_exists(key):
        raise DatasetRefError("dataset_not_found", f"{text} does not exist")
    return _S3Ref(bucket, key, fmt)


def _parse_local(raw: str, uri: str, access: Access) -> _LocalRef:
    candidate = PurePosixPath(raw)
    if not candidate.is_absolute() or ".." in candidate.parts:
        raise DatasetRefError(
            "invalid_dataset_uri",
            f"{uri!r}: a local path must be absolute, without '..'; expected {_ACCEPTED}",
        )
    try:
        real = local_path(access, raw, "dataset", shown=uri)
    except AccessDenied as exc:
        raise DatasetRefError(exc.code, exc.message) from exc
    try:
        mode = real.stat().st_mode
    except FileNotFoundError as exc:
        raise DatasetRefError("dataset_not_found", f"{uri!r} does not exist") from exc
    except OSError as exc:
        raise DatasetRefError("dataset_unreadable", f"{uri!r} cannot be read: {exc.strerror}") from exc
    if stat.S_ISDIR(mode):
        _vetted_parquet_files(real, uri, access)
        return _LocalRef(real, "parquet", is_dir=True)
    if not stat.S_ISREG(mode):
        raise DatasetRefError("dataset_unreadable", f"{uri!r} is not a regular file")
    fmt = detect_format(PurePosixPath(raw).name)
    _check_readable(real, uri)
    return _LocalRef(real, fmt, is_dir=False, name=PurePosixPath(raw).name)


def _check_readable(path: Path, uri: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise DatasetRefError("dataset_unreadable", f"{uri!r} cannot be read: {exc.strerror}") from exc


def _vetted_parquet_files(directory: Path, uri: str, access: Access) -> list[tuple[PurePosixPath, Path]]:
    """The directory's parquet files as (relative name, real path), each checked where its links lead.

    Hidden and underscore entries (``_SUCCESS``, ``.crc``) are writer bookkeeping,
    skipped like pyarrow does. Directory links are not followed: a parent of the
    store, or a link into it, can never pull stored artifacts into a scan.
    """
    found: list[tuple[PurePosixPath, Path]] = []
    for current, dirs, names in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        for name in sorted(names):
            if not name.lower().endswith(".parquet") or name.startswith(("_", ".")):
                continue
            path = Path(current, name)
            rel = PurePosixPath(path.relative_to(directory).as_posix())
            real = Path(os.path.realpath(path))
            try:
                check_scanned_file(access, real, "dataset", f"{uri} ({rel})")
            except AccessDenied as exc:
                raise DatasetRefError(exc.code, exc.message) from exc
            if not real.is_file():
                raise DatasetRefError("dataset_unreadable", f"{uri!r}: {rel} is not a regular file")
            _check_readable(real, uri)
            found.append((rel, real))
    if not found:
        raise DatasetRefError("dataset_unreadable", f"{uri!r} is a directory without .parquet files")
    return found


def _view_sha256(path: Path) -> str:
    # A view's entries are links to pinned descriptors: followed on purpose, unlike a store's files.
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _tree_sha256(files: list[tuple[PurePosixPath, Path]]) -> str:
    # A parquet directory's hash: sha256 over "<file sha256>  <relative path>\n" lines, sorted by path.
    digest = hashlib.sha256()
    for rel, real in sorted(files):
        file_hash = _view_sha256(real)
        digest.update(f"{file_hash}  {rel.as_posix()}\n".encode())
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
        if not is_data_file(entry.path) or entry.path == MANIFEST_NAME:
            continue
        try:
            data_files.append((entry, detect_format(entry.path)))
        except DatasetRefError:
            continue
    if len(data_files) != 1:
        raise DatasetRefError(
            "dataset_unreadable",
            f"dataset {artifact_id} must hold exactly one data file (data.parquet, scored.parquet, sft.parquet, "
            "data.jsonl or data.csv); "
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


def _fetch_hub(uri: str, ref: _HubRef) -> ResolvedDataset:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with the ml extra
        raise DatasetRefError("dataset_not_found", f"{uri}: huggingface_hub is not installed here") from exc
    try:
        path = Path(hf_hub_download(ref.repo_id, ref.filename, repo_type="dataset"))
    except Exception as exc:  # offline cache miss, unknown repo or file, network refusal
        raise DatasetRefError("dataset_not_found", f"{uri} is not available here: {exc}") from exc
    return ResolvedDataset(path=path, format=ref.format, uri=uri, sha256=sha256_file(path)[0])


def _fetch_s3(uri: str, ref: _S3Ref, store: ArtifactStore, workdir: Path) -> ResolvedDataset:
    from nexa_store.s3 import S3ArtifactStore

    if not isinstance(store, S3ArtifactStore):  # _parse_s3 already refused this; kept for the type checker
        raise DatasetRefError("dataset_not_allowed", f"{uri!r}: this server has no S3 artifact store")
    # The URI's hash in the name keeps two inputs with the same base name apart.
    name = f"{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{PurePosixPath(ref.key).name}"
    dest = workdir / "inputs" / name
    source = store if ref.bucket == store.bucket else store.for_bucket(ref.bucket)
    try:
        digest, _ = source.download_object(ref.key, dest)
    except ArtifactNotFound as exc:
        raise DatasetRefError("dataset_not_found", f"{uri} does not exist") from exc
    return ResolvedDataset(path=dest, format=ref.format, uri=uri, sha256=digest)
