"""A model directory uploaded by its owner becomes a base checkpoint (``ckpt_…``) of their tenant.

What the SDK and CLI send when a job names a model directory on the caller's machine
(``model="./my-model"``): the server never reads a client's relative path, and a name
that is not a local directory would otherwise be looked up on the hub.

Only what loads without running code is accepted: ``safetensors`` weights, JSON
configs and tokenizer files. Pickled weights (``.bin``, ``.pt``, ``.pth``, ``.pkl``…)
execute code when a worker loads them, and Python files are what
``trust_remote_code`` would import; both are refused before anything is stored.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import IO

from sqlalchemy.orm import Session

from nexa.contracts import UploadedModel
from nexa.contracts.artifacts import MODEL_UPLOAD_REFUSED_SUFFIXES
from nexa.contracts.refs import artifact_ref_uri
from nexa.ids import new_id
from nexa_gateway.db import Artifact, utcnow
from nexa_gateway.errors import ApiError
from nexa_gateway.services import uploads
from nexa_gateway.services.tarfiles import unpack
from nexa_store.base import ArtifactStore

WEIGHTS_SUFFIX = ".safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def check_model_file(rel: str) -> None:
    """Refuse a file of an uploaded model that could run code on the worker that loads it."""
    suffix = PurePosixPath(rel).suffix.lower()
    if suffix in MODEL_UPLOAD_REFUSED_SUFFIXES:
        raise ApiError(
            422,
            "model_file_refused",
            f"{rel}: {suffix} files are not accepted in a model upload (pickled weights and code run when "
            "loaded); save the weights as safetensors (save_pretrained(..., safe_serialization=True))",
            field="file",
        )


def _check_model_dir(root: Path) -> list[str]:
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    if "config.json" not in files:
        raise ApiError(
            422,
            "model_unreadable",
            "the archive has no config.json at its top: not a model directory",
            field="file",
        )
    if ADAPTER_CONFIG in files:
        raise ApiError(
            422,
            "model_unreadable",
            "this is a LoRA adapter: upload the merged model (merge_and_unload, then save_pretrained), "
            "or train on its base and pass the adapter's training data",
            field="file",
        )
    if not any(f.endswith(WEIGHTS_SUFFIX) for f in files):
        raise ApiError(422, "model_unreadable", "the archive has no .safetensors weights", field="file")
    return files


def upload_model(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    *,
    filename: str,
    stream: IO[bytes],
    name: str | None,
    max_bytes: int,
    spool_dir: Path | None = None,
) -> UploadedModel:
    """Store a tar of a model directory as a new base checkpoint of ``tenant_id`` and register it."""
    if not filename.lower().endswith(".tar"):
        raise ApiError(
            415, "unsupported_media_type", "a model is uploaded as a .tar of its directory", field="file"
        )
    checkpoint_id = new_id("ckpt")
    with tempfile.TemporaryDirectory(prefix="model-upload-", dir=spool_dir) as spool:
        archive = Path(spool) / "model.tar"
        if uploads.copy_upload(stream, archive, max_bytes=max_bytes, gzipped=False) == 0:
            raise ApiError(400, "model_unreadable", "the uploaded file is empty", field="file")
        writer = store.begin("checkpoint", checkpoint_id)
        with writer:
            unpack(archive, writer.path, check=check_model_file)
            files = _check_model_dir(writer.path)
            shown = name or PurePosixPath(filename).stem
            manifest = writer.commit(
                tenant_id=tenant_id,
                config={"base": True, "source": "upload", "name": shown},
                metrics={},
            )
    row = Artifact(
        id=checkpoint_id,
        tenant_id=tenant_id,
        kind="checkpoint",
        uri=store.uri(checkpoint_id),
        name=shown,
        size_bytes=sum(f.size for f in manifest.files),
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return UploadedModel(
        checkpoint_id=checkpoint_id,
        name=shown,
        uri=artifact_ref_uri(checkpoint_id),
        size_bytes=row.size_bytes,
        files=files,
        created_at=row.created_at,
    )
