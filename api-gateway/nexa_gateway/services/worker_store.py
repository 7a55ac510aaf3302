"""The artifact store, seen through the gateway by workers that hold no storage credentials.

A tenant's own node (registered with a node token) is not the platform: it must
not hold the platform's S3 keys, nor see the store's layout. It reads and writes
artifacts through these calls instead, and each one is scoped by the attempt it
runs:

* the worker must hold the live lease on that job at that attempt (a late or
  frozen worker gets ``stale_attempt``, as its reports do); an engine pod in
  cluster mode instead presents an attempt token (``nexa.attempttokens``), good
  while its attempt is the NexaJob's current one and the job has not ended;
* it reads only artifacts whose manifest names the job's tenant; anything else
  answers *not found*, the same as an id that does not exist;
* it writes only new artifacts, and the gateway, not the worker, stamps their
  manifest with the job, attempt and tenant.

An upload is one tar stream of the staged directory plus a ``.nexa-commit.json``
member (inputs, config, metrics). Only plain files and directories with safe
relative names are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.attempttokens import AttemptClaim
from nexa.contracts import ArtifactManifest, InputSource
from nexa.contracts import Job as JobModel
from nexa.contracts.jobs import TERMINAL_STATES
from nexa.contracts.pipelines import PIPELINE_LABEL
from nexa_gateway.db import Job
from nexa_gateway.errors import ApiError, not_found
from nexa_gateway.services.queue import stale
from nexa_gateway.services.tarfiles import bad_upload, unpack
from nexa_store.base import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    check_artifact_id,
    kind_for_id,
)
from nexa_store.signing import SignatureError

COMMIT_MEMBER = ".nexa-commit.json"
MAX_COMMIT_BYTES = 4 << 20  # inputs, config and metrics: small JSON

_INPUTS = TypeAdapter(list[InputSource])


@dataclass(frozen=True)
class AttemptScope:
    """The one job attempt a store call acts for: whose artifacts it reads, what it may write."""

    id: str
    attempt: int
    tenant_id: str
    job_type: str = ""
    # The job's nexa.dev/pipeline label as the platform set it (None: not a pipeline step).
    pipeline_id: str | None = None


def token_scope(
    claim: AttemptClaim, job_id: str, attempt: int, current: Callable[[str, str], JobModel]
) -> AttemptScope:
    """The scope an attempt token grants, if its attempt is the job's current one (else 409 or 404).

    ``current(tenant, job_id)`` reads the job as the backend knows it (the NexaJob in cluster mode).
    """
    if claim.job_id != job_id:
        raise not_found("job", job_id)
    if claim.attempt != attempt:
        raise stale(job_id, attempt)
    job = current(claim.tenant, job_id)
    if job.status in TERMINAL_STATES or job.attempts != attempt:
        raise stale(job_id, attempt)
    return AttemptScope(job_id, attempt, claim.tenant, job.job_type.value, job.labels.get(PIPELINE_LABEL))


def leased_scope(session: Session, worker_id: str, job_id: str, attempt: int) -> AttemptScope:
    """The scope of a worker's call: the attempt whose lease it holds."""
    job = leased_job(session, worker_id, job_id, attempt)
    return AttemptScope(
        job.id, job.attempt, job.tenant_id, job.job_type, (job.labels or {}).get(PIPELINE_LABEL)
    )


def leased_job(session: Session, worker_id: str, job_id: str, attempt: int) -> Job:
    """The job, if ``worker_id`` holds its running attempt ``attempt``; else ``stale_attempt`` (409)."""
    job = session.scalar(
        select(Job).where(
            Job.id == job_id,
            Job.status == "running",
            Job.attempt == attempt,
            Job.worker_id == worker_id,
        )
    )
    if job is None:
        raise stale(job_id, attempt)
    return job


def readable_manifest(
    store: ArtifactStore,
    job: AttemptScope,
    artifact_id: str,
    accepted: Callable[[ArtifactManifest], None] | None = None,
) -> ArtifactManifest:
    """The manifest of an artifact the job's tenant owns; anything else is *not found*.

    ``accepted`` raises ``SignatureError`` for a manifest the platform never accepted
    (403 ``artifact_unsigned``); the job's own outputs of an earlier attempt are exempt.
    """
    try:
        kind_for_id(artifact_id)
        manifest = store.read_manifest(artifact_id, verify=False)
    except ArtifactNotFound as exc:
        raise not_found("artifact", artifact_id) from exc
    except IntegrityError as exc:
        raise ApiError(409, "artifact_corrupt", f"artifact {artifact_id}: {exc}") from exc
    except ArtifactError as exc:
        raise not_found("artifact", artifact_id) from exc
    if manifest.tenant_id != job.tenant_id:
        raise not_found("artifact", artifact_id)
    if accepted is not None and manifest.job_id != job.id:
        try:
            accepted(manifest)
        except SignatureError as exc:
            raise ApiError(403, "artifact_unsigned", f"artifact {artifact_id} cannot be used: {exc}") from exc
    return manifest


def readable_ids(store: ArtifactStore, job: AttemptScope, kind: str) -> list[str]:
    """Committed ids of ``kind`` whose manifest names the job's tenant."""
    ids = []
    for artifact_id in store.list_ids(kind):
        try:
            manifest = store.read_manifest(artifact_id, verify=False)
        except ArtifactError:
            continue  # half-written or damaged: not the caller's to read
        if manifest.tenant_id == job.tenant_id:
            ids.append(artifact_id)
    return ids


def _commit_fields(data: bytes) -> tuple[list[InputSource], dict[str, Any] | None, dict[str, Any] | None]:
    try:
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise ValueError("not an object")
        inputs = _INPUTS.validate_python(fields.get("inputs") or [])
    except (ValueError, ValidationError) as exc:
        raise bad_upload(f"{COMMIT_MEMBER}: {exc}") from exc
    config, metrics = fields.get("config"), fields.get("metrics")
    for name, value in (("config", config), ("metrics", metrics)):
        if value is not None and not isinstance(value, dict):
            raise bad_upload(f"{COMMIT_MEMBER}: {name} must be an object")
    return inputs, config, metrics


def extract_upload(archive: Path, dest: Path) -> bytes:
    """Unpack a worker's artifact tar into ``dest``; the commit member's bytes (see ``tarfiles.unpack``)."""
    commit = unpack(archive, dest, special=COMMIT_MEMBER, special_max_bytes=MAX_COMMIT_BYTES)
    if commit is None:
        raise bad_upload(f"the archive has no {COMMIT_MEMBER}")
    return commit


def accept_upload(
    store: ArtifactStore, job: AttemptScope, kind: str, artifact_id: str, archive: Path
) -> ArtifactManifest:
    """Commit the uploaded artifact as the job's attempt wrote it; idempotent for the same content."""
    try:
        check_artifact_id(kind, artifact_id)
    except ArtifactError as exc:
        raise ApiError(422, "validation_error", str(exc), field="artifact_id") from exc
    try:
        existing = store.read_manifest(artifact_id, verify=False)
    except ArtifactNotFound:
        existing = None
    except ArtifactError as exc:
        raise ApiError(
            409, "artifact_exists", f"artifact {artifact_id} exists and is unreadable: {exc}"
        ) from exc
    if existing is not None and (
        existing.job_id != job.id or existing.attempt != job.attempt or existing.tenant_id != job.tenant_id
    ):
        # Never let a worker overwrite, or learn about, an artifact its attempt did not write.
        raise ApiError(409, "artifact_exists", f"artifact {artifact_id} already exists")
    writer = store.begin(kind, artifact_id)
    with writer:
        inputs, config, metrics = _commit_fields(extract_upload(archive, writer.path))
        try:
            return writer.commit(
                job_id=job.id,
                attempt=job.attempt,
                tenant_id=job.tenant_id,
                # The gateway's own record, whatever the worker claims: it set this label itself.
                pipeline_id=job.pipeline_id,
                inputs=inputs,
                config=config,
                metrics=metrics,
            )
        except IntegrityError as exc:
            raise ApiError(409, "artifact_exists", f"artifact {artifact_id}: {exc}") from exc
