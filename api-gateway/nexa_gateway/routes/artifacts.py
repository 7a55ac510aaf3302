"""Listing artifacts, reading their verified manifests and files, and deleting them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from nexa.contracts import ArtifactDependents, ArtifactInfo, ArtifactList, Deletion
from nexa.contracts.lineage import DEFAULT_LINEAGE_DEPTH, MAX_LINEAGE_DEPTH, Lineage, LineageDirection
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.services import artifacts as svc
from nexa_gateway.services import deletion, lineage

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

ArtifactIdPath = Annotated[str, Path(min_length=1, max_length=64)]
ForceQuery = Annotated[
    bool,
    Query(
        description="Delete even though other artifacts were made from it (they keep an input that is gone). "
        "Unfinished jobs and serving deployments still refuse it."
    ),
]


@router.get("", response_model=ArtifactList)
def list_artifacts(
    principal: CurrentPrincipal,
    session: SessionDep,
    kind: Annotated[Literal["dataset", "distill", "checkpoint", "eval", "deployment"] | None, Query()] = None,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ArtifactList:
    """The caller's artifacts, newest first."""
    rows, nxt = svc.list_artifact_rows(
        session, principal.tenant_id, kind=kind, job_id=job_id, limit=limit, cursor=cursor
    )
    session.commit()
    return ArtifactList(items=[svc.artifact_info(r, None) for r in rows], next_cursor=nxt)


@router.get("/{artifact_id}", response_model=ArtifactInfo)
def get_artifact(
    artifact_id: ArtifactIdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> ArtifactInfo:
    """One artifact with its manifest, verified against the stored files."""
    row = svc.get_artifact_row(session, principal.tenant_id, artifact_id)
    session.commit()
    return svc.artifact_info(
        row, svc.read_verified_manifest(state.store, artifact_id, state.trust, row.created_at)
    )


@router.get(
    "/{artifact_id}/files/{path:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}},
)
async def read_artifact_file(
    artifact_id: ArtifactIdPath,
    path: Annotated[str, Path(min_length=1, max_length=1024)],
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> FileResponse:
    """One file of an artifact, verified against its manifest hash, streamed (HTTP `Range` works)."""
    row = await run_in_threadpool(svc.get_artifact_row, session, principal.tenant_id, artifact_id)
    registered_at = row.created_at
    await run_in_threadpool(session.commit)
    local, temporary = await run_in_threadpool(
        svc.verified_file, state.store, artifact_id, path, state.trust, registered_at
    )
    media = "text/html" if path.endswith(".html") else "application/json" if path.endswith(".json") else None
    cleanup = BackgroundTask(local.unlink, missing_ok=True) if temporary else None
    return FileResponse(local, media_type=media or "application/octet-stream", background=cleanup)


@router.get("/{artifact_id}/lineage", response_model=Lineage)
def artifact_lineage(
    artifact_id: ArtifactIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    direction: Annotated[
        LineageDirection, Query(description="up: what it was made from; down: what was made from it; both.")
    ] = "up",
    depth: Annotated[
        int, Query(ge=1, le=MAX_LINEAGE_DEPTH, description="Steps to follow from the artifact.")
    ] = (DEFAULT_LINEAGE_DEPTH),
) -> Lineage:
    """The artifact's lineage graph: inputs (with the jobs and pipeline steps that made each) up to the
    raw data, or everything made from it down to deployments."""
    return lineage.lineage(session, state.store, principal.tenant_id, artifact_id, direction, depth)


@router.get("/{artifact_id}/dependents", response_model=ArtifactDependents)
def artifact_dependents(
    artifact_id: ArtifactIdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> ArtifactDependents:
    """What needs the artifact: artifacts made from it, unfinished jobs naming it, deployments serving it."""
    found = deletion.dependents_of(session, state, principal.tenant_id, artifact_id)
    session.commit()
    return found


@router.delete("/{artifact_id}", response_model=Deletion)
def delete_artifact(
    artifact_id: ArtifactIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    force: ForceQuery = False,
) -> Deletion:
    """Delete an artifact and its files; its storage is no longer charged from the next hour.

    409 `artifact_in_use`, naming them, while anything depends on it (`GET …/dependents`).
    """
    done = deletion.delete_artifact(session, state, principal.tenant_id, artifact_id, force=force)
    session.commit()
    return done
