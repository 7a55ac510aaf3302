"""Uploading, listing and deleting datasets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile

from nexa.contracts import Dataset, DatasetList, Deletion
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.routes.artifacts import ForceQuery
from nexa_gateway.services import artifacts as svc
from nexa_gateway.services import deletion, uploads
from nexa_gateway.services.uploads import MULTIPART_SLACK

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", response_model=Dataset, status_code=201)
def upload_dataset(
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    file: Annotated[UploadFile, File(description="A parquet, jsonl, jsonl.gz or csv file.")],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> Dataset:
    """Upload a dataset file; it gets a `ds_…` id usable in every job."""
    uploads.refuse_declared_over(
        request.headers.get("content-length"), state.settings.max_upload_bytes, slack=MULTIPART_SLACK
    )
    dataset = svc.upload_dataset(
        session,
        state.store,
        principal.tenant_id,
        filename=file.filename or "upload",
        stream=file.file,
        name=name,
        max_bytes=state.settings.max_upload_bytes,
    )
    session.commit()
    return dataset


@router.get("", response_model=DatasetList)
def list_datasets(
    principal: CurrentPrincipal,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> DatasetList:
    """The caller's datasets, newest first."""
    rows, nxt = svc.list_artifact_rows(
        session, principal.tenant_id, kind="dataset", job_id=None, limit=limit, cursor=cursor
    )
    session.commit()
    return DatasetList(items=[svc.dataset_contract(r) for r in rows], next_cursor=nxt)


DatasetIdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/{dataset_id}", response_model=Dataset)
def get_dataset(
    dataset_id: DatasetIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
) -> Dataset:
    """One dataset."""
    row = svc.get_artifact_row(session, principal.tenant_id, dataset_id, kind="dataset")
    session.commit()
    return svc.dataset_contract(row)


@router.delete("/{dataset_id}", response_model=Deletion)
def delete_dataset(
    dataset_id: DatasetIdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    force: ForceQuery = False,
) -> Deletion:
    """Delete a dataset and its file; the rules of `DELETE /v1/artifacts/{id}` (409 `artifact_in_use`)."""
    done = deletion.delete_artifact(
        session, state, principal.tenant_id, dataset_id, force=force, kind="dataset"
    )
    session.commit()
    return done
