"""Uploading a model directory as a base checkpoint of the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from nexa.contracts import UploadedModel
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.services.artifacts import spool_dir
from nexa_gateway.services.modelupload import upload_model as store_model
from nexa_gateway.services.uploads import MULTIPART_SLACK, refuse_declared_over

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.post("", response_model=UploadedModel, status_code=201)
def upload_model(
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    file: Annotated[
        UploadFile,
        File(description="A .tar of the model directory: config.json, safetensors weights, tokenizer."),
    ],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> UploadedModel:
    """Upload a model directory; it becomes a `ckpt_…` usable as a job's `model`, `teacher` or `checkpoint_id`.

    Only files that load without running code are accepted (safetensors, JSON, tokenizer files).
    """
    limit = state.settings.worker_upload_max_bytes
    refuse_declared_over(request.headers.get("content-length"), limit, slack=MULTIPART_SLACK)
    model = store_model(
        session,
        state.store,
        principal.tenant_id,
        filename=file.filename or "upload",
        stream=file.file,
        name=name,
        max_bytes=limit,
        spool_dir=spool_dir(),
    )
    session.commit()
    return model
