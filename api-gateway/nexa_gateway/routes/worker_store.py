"""Artifact reads and writes for workers without storage credentials, scoped by the attempt they run.

See ``nexa_gateway.services.worker_store`` for the rules.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path as FsPath
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from nexa.contracts import ArtifactManifest
from nexa_gateway.db import Job
from nexa_gateway.deps import CurrentWorker, StateDep
from nexa_gateway.errors import ApiError, not_found
from nexa_gateway.services import worker_store as svc
from nexa_gateway.services.artifacts import spool_dir
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


def _job(state: AppState, worker_id: str, job_id: str, attempt: int) -> Job:
    with state.db.session() as session:
        job = svc.leased_job(session, worker_id, job_id, attempt)
        session.expunge(job)
        return job


@router.get("/artifacts", response_model=ArtifactIds)
def list_store_artifacts(
    job_id: JobIdPath,
    attempt: AttemptQuery,
    kind: Annotated[Kind, Query()],
    worker: CurrentWorker,
    state: StateDep,
) -> ArtifactIds:
    """Committed artifacts of ``kind`` that belong to the job's tenant."""
    job = _job(state, worker.id, job_id, attempt)
    return ArtifactIds(ids=svc.readable_ids(state.store, job, kind))


@router.get("/artifacts/{artifact_id}/manifest", response_model=ArtifactManifest)
def read_store_manifest(
    job_id: JobIdPath,
    artifact_id: ArtifactIdPath,
    attempt: AttemptQuery,
    worker: CurrentWorker,
    state: StateDep,
) -> ArtifactManifest:
    """The manifest of an artifact of the job's tenant (not verified here: the worker checks each file)."""
    job = _job(state, worker.id, job_id, attempt)
    return svc.readable_manifest(state.store, job, artifact_id)


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
    worker: CurrentWorker,
    state: StateDep,
) -> FileResponse:
    """One file, verified against its manifest hash, streamed (HTTP ranges work)."""
    job = _job(state, worker.id, job_id, attempt)
    svc.readable_manifest(state.store, job, artifact_id)
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
    worker: CurrentWorker,
    state: StateDep,
) -> ArtifactManifest:
    """Commit a new artifact of the attempt from a tar stream (``application/x-tar``)."""
    job = await run_in_threadpool(_job, state, worker.id, job_id, attempt)
    limit = state.settings.worker_upload_max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"artifact upload exceeds the {limit}-byte limit")
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
        job = await run_in_threadpool(_job, state, worker.id, job_id, attempt)
        return await run_in_threadpool(svc.accept_upload, state.store, job, kind, artifact_id, archive)
    finally:
        archive.unlink(missing_ok=True)
