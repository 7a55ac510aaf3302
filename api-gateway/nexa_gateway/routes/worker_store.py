"""Artifact reads and writes for workers without storage credentials, scoped by the attempt they run.

See ``nexa_gateway.services.worker_store`` for the rules.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import select
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from nexa.attempttokens import AttemptClaim
from nexa.contracts import ArtifactManifest
from nexa.contracts.nexajob import run_progress_key, run_result_key
from nexa_gateway.db import Artifact, Worker
from nexa_gateway.deps import StateDep, StoreCaller
from nexa_gateway.errors import ApiError, not_found
from nexa_gateway.routes.workers import count_usage
from nexa_gateway.services import worker_store as svc
from nexa_gateway.services.artifacts import promote_artifacts, spool_dir
from nexa_gateway.services.attemptusage import record_attempt_usage, usage_of_record
from nexa_gateway.services.uploads import refuse_declared_over
from nexa_gateway.state import AppState
from nexa_store.base import ArtifactError, ArtifactNotFound, IntegrityError

router = APIRouter(prefix="/v1/workers/jobs/{job_id}/store", tags=["workers"])

JobIdPath = Annotated[str, Path(min_length=1, max_length=64)]
ArtifactIdPath = Annotated[str, Path(min_length=1, max_length=64)]
AttemptQuery = Annotated[
    int, Query(ge=1, le=100_000, description="The attempt the worker runs; stale attempts get 409.")
]
Kind = Literal["dataset", "distill", "checkpoint", "eval", "deployment"]
_CHUNK = 1 << 20


class ArtifactIds(BaseModel):
    ids: list[str]


# An attempt token's liveness, as last read from the backend: (job, attempt, tenant) -> until.
_LIVE_SECONDS = 3.0
_live: dict[tuple[str, int, str], tuple[float, svc.AttemptScope]] = {}
_live_lock = threading.Lock()


def _job(state: AppState, caller: Worker | AttemptClaim, job_id: str, attempt: int) -> svc.AttemptScope:
    """The attempt this call acts for: the worker's lease, or the pod's token while its attempt is current."""
    if isinstance(caller, AttemptClaim):
        key = (caller.job_id, caller.attempt, caller.tenant)
        now = time.monotonic()
        with _live_lock:
            cached = _live.get(key)
        # The whole scope is kept (job type, pipeline), not only that it was current: a manifest
        # written within the window must record the same provenance as one written outside it.
        if cached is not None and cached[0] > now and key[:2] == (job_id, attempt):
            return cached[1]
        # A pod fetching many files would otherwise read its NexaJob for each one.
        scope = svc.token_scope(caller, job_id, attempt, state.backend.get)
        with _live_lock:
            if len(_live) > 10_000:
                _live.clear()
            _live[key] = (now + _LIVE_SECONDS, scope)
        return scope
    with state.db.session() as session:
        return svc.leased_scope(session, caller.id, job_id, attempt)


def _accepted(state: AppState) -> Callable[[ArtifactManifest], None] | None:
    """With signing on: the check that the platform accepted an artifact (or registered it before signing)."""
    trust = state.trust
    if not trust.enabled:
        return None

    def check(manifest: ArtifactManifest) -> None:
        with state.db.read() as session:
            registered = session.scalar(
                select(Artifact.created_at).where(Artifact.id == manifest.artifact_id)
            )
        trust.check(manifest, registered_at=registered)

    return check


@router.get("/artifacts", response_model=ArtifactIds)
def list_store_artifacts(
    job_id: JobIdPath,
    attempt: AttemptQuery,
    kind: Annotated[Kind, Query()],
    worker: StoreCaller,
    state: StateDep,
) -> ArtifactIds:
    """Committed artifacts of ``kind`` that belong to the job's tenant."""
    job = _job(state, worker, job_id, attempt)
    return ArtifactIds(ids=svc.readable_ids(state.store, job, kind))


@router.get("/artifacts/{artifact_id}/manifest", response_model=ArtifactManifest)
def read_store_manifest(
    job_id: JobIdPath,
    artifact_id: ArtifactIdPath,
    attempt: AttemptQuery,
    worker: StoreCaller,
    state: StateDep,
) -> ArtifactManifest:
    """The manifest of an artifact of the job's tenant (not verified here: the worker checks each file)."""
    job = _job(state, worker, job_id, attempt)
    return svc.readable_manifest(state.store, job, artifact_id, _accepted(state))


@router.get(
    "/artifacts/{artifact_id}/files/{path:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}},
)
def read_store_file(
    job_id: JobIdPath,
    artifact_id: ArtifactIdPath,
    path: Annotated[str, Path(min_length=1, max_length=1024)],
    attempt: AttemptQuery,
    worker: StoreCaller,
    state: StateDep,
) -> FileResponse:
    """One file, verified against its manifest hash, streamed (HTTP ranges work)."""
    job = _job(state, worker, job_id, attempt)
    svc.readable_manifest(state.store, job, artifact_id, _accepted(state))
    try:
        local, temporary = state.store.verified_file(artifact_id, path, spool_dir())
    except ArtifactNotFound as exc:
        raise not_found("file", f"{artifact_id}/{path}") from exc
    except IntegrityError as exc:
        raise ApiError(409, "artifact_corrupt", f"{artifact_id}/{path} failed verification: {exc}") from exc
    except ArtifactError as exc:
        raise ApiError(400, "bad_request", str(exc), field="path") from exc
    cleanup = BackgroundTask(local.unlink, missing_ok=True) if temporary else None
    return FileResponse(local, media_type="application/octet-stream", background=cleanup)


@router.put("/artifacts/{artifact_id}", response_model=ArtifactManifest, status_code=201)
async def write_store_artifact(
    request: Request,
    job_id: JobIdPath,
    artifact_id: ArtifactIdPath,
    attempt: AttemptQuery,
    kind: Annotated[Kind, Query()],
    worker: StoreCaller,
    state: StateDep,
) -> ArtifactManifest:
    """Commit a new artifact of the attempt from a tar stream (``application/x-tar``)."""
    job = await run_in_threadpool(_job, state, worker, job_id, attempt)
    limit = state.settings.worker_upload_max_bytes
    refuse_declared_over(request.headers.get("content-length"), limit, what="artifact upload")
    handle, name = tempfile.mkstemp(prefix="artifact-", suffix=".tar", dir=spool_dir())
    archive = FsPath(name)
    try:
        size = 0
        with os.fdopen(handle, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413, "payload_too_large", f"artifact upload exceeds the {limit}-byte limit"
                    )
                out.write(chunk)  # local disk: brief enough to do on the loop
        # The lease is checked again after the (possibly long) upload: a late writer commits nothing.
        job = await run_in_threadpool(_job, state, worker, job_id, attempt)
        return await run_in_threadpool(svc.accept_upload, state.store, job, kind, artifact_id, archive)
    finally:
        archive.unlink(missing_ok=True)


RUN_RECORD_LIMIT = 4 << 20  # a result record is small JSON; big results live in artifacts
RunRecordName = Literal["result.json", "progress.json"]


@router.put("/runs/{name}", status_code=204, response_class=Response)
async def write_run_record(
    request: Request,
    job_id: JobIdPath,
    name: RunRecordName,
    attempt: AttemptQuery,
    worker: StoreCaller,
    state: StateDep,
) -> Response:
    """An engine pod's result or progress record for its attempt, where the operator reads it.

    The result record is the pod's report that its attempt succeeded: the artifacts it
    lists are accepted here, as a worker's ``complete`` report has them accepted
    (registered for the tenant and countersigned), before the operator can see it.
    """
    if not isinstance(worker, AttemptClaim):
        raise ApiError(403, "forbidden", "workers report results with POST /v1/workers/jobs/{id}/complete")
    scope = await run_in_threadpool(_job, state, worker, job_id, attempt)
    body = await request.body()
    if len(body) > RUN_RECORD_LIMIT:
        raise ApiError(413, "payload_too_large", f"a run record is at most {RUN_RECORD_LIMIT} bytes")
    if name == "result.json":
        await run_in_threadpool(_accept_result, state, scope, body)
    key = (run_result_key if name == "result.json" else run_progress_key)(scope.id, scope.attempt)
    try:
        await run_in_threadpool(state.store.write_run_record, key, body)
    except ArtifactError as exc:
        raise ApiError(503, "store_unavailable", f"cannot write {name}: {exc}") from exc
    return Response(status_code=204)


def _accept_result(state: AppState, scope: svc.AttemptScope, body: bytes) -> None:
    """Register and countersign the artifacts a pod's result record lists (the attempt's own only)."""
    try:
        record = json.loads(body)
        artifacts = record["artifacts"]
        if (
            not isinstance(record, dict)
            or record.get("job_id") != scope.id
            or record.get("attempt") != scope.attempt
            or not isinstance(artifacts, list)
            or not all(isinstance(a, str) for a in artifacts)
        ):
            raise ValueError("not this attempt's result record")
        usage = usage_of_record(record.get("usage"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(422, "invalid_result", f"the result record cannot be read: {exc}") from exc
    # Read afresh, not from the token cache: the bill needs the job's type and GPU type.
    job = state.backend.get(scope.tenant_id, scope.id)
    resources = job.spec.get("resources") if isinstance(job.spec, dict) else None
    gpu_type = resources.get("gpu_type") if isinstance(resources, dict) else None
    with state.db.session() as session:
        promote_artifacts(session, state.store, scope, artifacts[:1000], state.platform_key)
        # The same transaction: the artifacts are accepted exactly when the usage is recorded.
        recorded = record_attempt_usage(
            session,
            tenant_id=scope.tenant_id,
            job_id=scope.id,
            attempt=scope.attempt,
            job_type=job.job_type.value,
            gpu_type=str(gpu_type) if gpu_type else None,
            usage=usage,
        )
    count_usage(state, job.job_type.value, str(gpu_type) if gpu_type else None, recorded)
