"""Datasets and artifacts: uploads, the registry table, input checks at submit, result promotion.

An artifact becomes visible to its tenant only by being registered here: an
upload registers its dataset at once; a job's outputs are registered when the
gateway accepts that attempt's result, and only if the manifest says the same
job and attempt wrote it. A superseded attempt's outputs are never promoted.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts import ArtifactInfo, ArtifactManifest, Dataset, JobOptions
from nexa.contracts.artifacts import PREFIX_KINDS, kind_of
from nexa.contracts.refs import artifact_ref_uri, job_references
from nexa.ids import is_id, new_id
from nexa_gateway.db import Artifact, ArtifactInput, utcnow
from nexa_gateway.errors import ApiError, not_found
from nexa_gateway.services import uploads
from nexa_gateway.services.jobs import decode_cursor, encode_cursor
from nexa_store.access import Access, AccessDenied, check_reference
from nexa_store.base import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreUnavailable,
)
from nexa_store.datasets import DatasetRefError, detect_format, is_data_file
from nexa_store.envelopes import manifest_digest
from nexa_store.outbound import check_key_env_name
from nexa_store.signing import PlatformTrust, SigningKey, countersign

log = logging.getLogger("nexa.gateway.artifacts")

_CHUNK = 1 << 20


def dataset_contract(row: Artifact) -> Dataset:
    return Dataset(
        dataset_id=row.id,
        name=row.name,
        uri=artifact_ref_uri(row.id),
        format=row.format or "parquet",
        num_rows=row.num_rows,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        created_at=row.created_at,
        job_id=row.job_id,
        columns=list(row.columns or []),
    )


def upload_dataset(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    *,
    filename: str,
    stream: IO[bytes],
    name: str | None,
    max_bytes: int,
) -> Dataset:
    """Store an uploaded parquet/jsonl/csv file as a new dataset and register it."""
    try:
        fmt = detect_format(filename)
    except DatasetRefError as exc:
        raise ApiError(415, "unsupported_media_type", exc.message, field="file") from exc
    dataset_id = new_id("ds")
    writer = store.begin("dataset", dataset_id)
    try:
        target = writer.path / f"data.{fmt}"
        written = uploads.copy_upload(
            stream, target, max_bytes=max_bytes, gzipped=filename.lower().endswith(".gz")
        )
        if written == 0:
            raise ApiError(400, "dataset_unreadable", "the uploaded file is empty", field="file")
        num_rows, columns = uploads.inspect_table(target, fmt)
        manifest = writer.commit(
            tenant_id=tenant_id,
            config={"source": "upload", "filename": filename},
            metrics={"num_rows": num_rows, "columns": columns},
        )
    except BaseException:
        writer.abort()
        raise
    entry = next(f for f in manifest.files if f.path == f"data.{fmt}")
    row = Artifact(
        id=dataset_id,
        tenant_id=tenant_id,
        kind="dataset",
        uri=store.uri(dataset_id),
        name=name or Path(filename).name,
        format=fmt,
        num_rows=num_rows,
        size_bytes=entry.size,
        sha256=entry.sha256,
        columns=columns,
        created_at=manifest.created_at,
    )
    session.add(row)
    session.flush()
    return dataset_contract(row)


def get_artifact_row(session: Session, tenant_id: str, artifact_id: str, kind: str | None = None) -> Artifact:
    query = select(Artifact).where(Artifact.id == artifact_id, Artifact.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    row = session.scalar(query)
    if row is None:
        raise not_found(kind or "artifact", artifact_id)
    return row


def list_artifact_rows(
    session: Session, tenant_id: str, *, kind: str | None, job_id: str | None, limit: int, cursor: str | None
) -> tuple[list[Artifact], str | None]:
    query = select(Artifact).where(Artifact.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(Artifact.kind == kind)
    if job_id is not None:
        query = query.where(Artifact.job_id == job_id)
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            (Artifact.created_at < at) | ((Artifact.created_at == at) & (Artifact.id < last_id))
        )
    rows = list(
        session.scalars(query.order_by(Artifact.created_at.desc(), Artifact.id.desc()).limit(limit + 1))
    )
    nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], nxt


def artifact_info(row: Artifact, manifest: ArtifactManifest | None) -> ArtifactInfo:
    return ArtifactInfo(
        artifact_id=row.id,
        kind=row.kind,
        uri=artifact_ref_uri(row.id),
        job_id=row.job_id,
        created_at=row.created_at,
        manifest=manifest,
    )


def read_verified_manifest(
    store: ArtifactStore,
    artifact_id: str,
    trust: PlatformTrust | None = None,
    registered_at: datetime | None = None,
) -> ArtifactManifest:
    """The manifest after checking every file, and (signing on) the platform's signature or legacy status."""
    try:
        manifest = store.read_manifest(artifact_id, verify=True)
        if trust is not None:
            trust.check(manifest, registered_at=registered_at)
        return manifest
    except ArtifactNotFound as exc:
        raise not_found("artifact", artifact_id) from exc
    except IntegrityError as exc:
        raise ApiError(409, "artifact_corrupt", f"artifact {artifact_id} failed verification: {exc}") from exc


def spool_dir() -> Path:
    """Where upload bodies wait while they are checked: the system temp dir unless NEXA_SPOOL_DIR says."""
    directory = Path(os.environ.get("NEXA_SPOOL_DIR") or tempfile.gettempdir()) / "nexa-uploads"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def verified_file(
    store: ArtifactStore,
    artifact_id: str,
    rel_path: str,
    trust: PlatformTrust | None = None,
    registered_at: datetime | None = None,
) -> tuple[Path, bool]:
    """A local path with the file's verified bytes, and whether it is a temporary copy to delete."""
    try:
        if trust is not None and trust.enabled:
            trust.check(store.read_manifest(artifact_id, verify=False), registered_at=registered_at)
        return store.verified_file(artifact_id, rel_path, spool_dir())
    except ArtifactNotFound as exc:
        raise not_found("file", f"{artifact_id}/{rel_path}") from exc
    except IntegrityError as exc:
        raise ApiError(
            409, "artifact_corrupt", f"{artifact_id}/{rel_path} failed verification: {exc}"
        ) from exc
    except (ArtifactError, ValueError) as exc:
        raise ApiError(400, "bad_request", str(exc), field="path") from exc


def check_job_inputs(store: ArtifactStore, access: Access, spec: JobOptions) -> None:
    """Refuse a submission naming anything its tenant cannot read, naming the field.

    Every reference the request carries is checked (``nexa.contracts.refs``), the
    same list the worker or pod checks again before it reads anything.
    """
    for field, name in _key_env_fields(spec.model_dump(mode="json")):
        try:
            check_key_env_name(name)
        except AccessDenied as exc:
            raise ApiError(422, exc.code, exc.message, field=field) from exc
    for ref in job_references(spec):
        try:
            check_reference(access, store, ref)
        except AccessDenied as exc:
            raise ApiError(422, exc.code, exc.message, field=exc.field or ref.field) from exc
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"the artifact store cannot be reached: {exc}") from exc
        except (OSError, ArtifactError) as exc:
            # One tenant's unreadable input is that request's problem, never the whole batch's.
            raise ApiError(
                422, f"{ref.kind}_unreadable", f"{ref.field}: cannot be read: {exc}", field=ref.field
            ) from exc


def _key_env_fields(body: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(field, variable name) of every ``*api_key_env`` a request sets, nested ones included."""
    found = []
    for name, value in body.items():
        if isinstance(value, dict):
            found += _key_env_fields(value, f"{prefix}{name}.")
        elif name.endswith("api_key_env") and isinstance(value, str):
            found.append((f"{prefix}{name}", value))
    return found


# An artifact id anywhere in an input's URI (internal://ds_…, a store path ending in /ckpt_…, …).
_ARTIFACT_ID_IN = re.compile(rf"(?<![a-z0-9_])(?:{'|'.join(PREFIX_KINDS)})_[a-z2-7]{{26}}(?![a-z2-7])")


def input_ids(manifest: ArtifactManifest) -> set[str]:
    """The stored artifacts ``manifest`` names as inputs: by ``artifact_id``, or by an id in the URI."""
    found: set[str] = set()
    for source in manifest.inputs:
        if source.artifact_id and kind_of(source.artifact_id) is not None:
            found.add(source.artifact_id)
        found.update(_ARTIFACT_ID_IN.findall(source.uri))
    found.discard(manifest.artifact_id)
    return found


def index_inputs(session: Session, tenant_id: str, manifest: ArtifactManifest) -> None:
    """Record what ``manifest``'s artifact was made from (``services.deletion`` asks this table)."""
    for input_id in sorted(input_ids(manifest)):
        if session.get(ArtifactInput, (manifest.artifact_id, input_id)) is None:
            session.add(
                ArtifactInput(artifact_id=manifest.artifact_id, input_id=input_id, tenant_id=tenant_id)
            )


class AcceptedAttempt(Protocol):
    """The attempt whose outputs are being accepted (a job row, or a cluster pod's scope)."""

    @property
    def id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def job_type(self) -> str: ...


def promote_artifacts(
    session: Session,
    store: ArtifactStore,
    job: AcceptedAttempt,
    artifact_ids: list[str],
    platform_key: SigningKey | None = None,
    expected: dict[str, str] | None = None,
) -> str | None:
    """Register the artifacts an accepted attempt produced; returns the first one's URI.

    ``expected``: each manifest's digest as the node signed it in its report; the manifest the store
    holds must be exactly that one.

    With a platform key, each is countersigned here: the signature says the platform
    accepted it, and only signed artifacts are readable as inputs and downloads.
    """
    first_uri = None
    for artifact_id in artifact_ids:
        kind = kind_of(artifact_id)
        if kind is None or not is_id(artifact_id):
            raise ApiError(
                422, "validation_error", f"{artifact_id!r} is not an artifact id", field="artifacts"
            )
        try:
            manifest = store.read_manifest(artifact_id, verify=True)
        except ArtifactNotFound as exc:
            raise ApiError(
                422, "artifact_missing", f"artifact {artifact_id} has no manifest", field="artifacts"
            ) from exc
        except IntegrityError as exc:
            raise ApiError(
                422, "artifact_corrupt", f"artifact {artifact_id}: {exc}", field="artifacts"
            ) from exc
        if (
            manifest.job_id != job.id
            or manifest.attempt != job.attempt
            or manifest.tenant_id != job.tenant_id
        ):
            raise ApiError(
                422,
                "artifact_foreign",
                f"artifact {artifact_id} was written by job {manifest.job_id} attempt {manifest.attempt}",
                field="artifacts",
            )
        if expected is not None and expected.get(artifact_id) != manifest_digest(manifest):
            raise ApiError(
                422,
                "manifest_mismatch",
                f"artifact {artifact_id}: the manifest in the store is not the one the node signed",
                field="manifests",
            )
        if session.get(Artifact, artifact_id) is not None:
            continue  # registered (and signed) already: a repeated report, or someone else's id
        if platform_key is not None:
            # The files were verified just now: sign exactly that manifest.
            countersign(store, artifact_id, platform_key, verified=manifest)
        data = next((f for f in manifest.files if is_data_file(f.path)), None)
        fmt = data.path.split(".", 1)[1] if data else None
        metrics = manifest.metrics or {}
        session.add(
            Artifact(
                id=artifact_id,
                tenant_id=job.tenant_id,
                kind=kind,
                uri=store.uri(artifact_id),
                name=f"{job.job_type} output of {job.id}",
                job_id=job.id,
                format=fmt if fmt in ("parquet", "jsonl", "csv") else None,
                num_rows=metrics.get("num_rows") if isinstance(metrics.get("num_rows"), int) else None,
                size_bytes=sum(f.size for f in manifest.files),
                sha256=data.sha256 if data else None,
                columns=[str(c) for c in metrics.get("columns", [])]
                if isinstance(metrics.get("columns"), list)
                else [],
                # The platform's clock, not the writer's: legacy status is judged by it.
                created_at=utcnow(),
            )
        )
        index_inputs(session, job.tenant_id, manifest)
        first_uri = first_uri or artifact_ref_uri(artifact_id)
    session.flush()
    return first_uri
