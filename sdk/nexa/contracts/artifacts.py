"""Artifact manifests (SPEC §7), datasets, and where artifacts live.

Layout, under the store root (a local directory or an S3 bucket prefix)::

    datasets/<ds_id>/        uploaded, audited, distilled and generated datasets
    distill/<job_id>/        teacher scratch state (resume checkpoints)
    checkpoints/<ckpt_id>/   model checkpoints
    evals/<ev_id>/           evaluation reports
    deployments/<dp_id>/     deployment records

Every artifact directory holds ``manifest.json``; the manifest is written last,
so a directory without one is an interrupted write and is never read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nexa.ids import id_prefix

ArtifactKind = Literal["dataset", "distill", "checkpoint", "eval", "deployment", "log"]

KIND_DIRS: dict[str, str] = {
    "dataset": "datasets",
    "distill": "distill",
    "checkpoint": "checkpoints",
    "eval": "evals",
    "deployment": "deployments",
    "log": "logs",
}
PREFIX_KINDS: dict[str, str] = {
    "ds": "dataset",
    "ckpt": "checkpoint",
    "ev": "eval",
    "dp": "deployment",
    "log": "log",
}

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Path relative to the artifact directory, '/'-separated.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class InputSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str
    sha256: str | None = Field(None, description="Hash of the input's bytes (or of its manifest) when known.")
    artifact_id: str | None = None


class ArtifactManifest(BaseModel):
    """What an artifact directory holds and how it was made."""

    model_config = ConfigDict(extra="forbid")

    version: int = MANIFEST_VERSION
    artifact_id: str
    kind: ArtifactKind
    created_at: datetime
    job_id: str | None = None
    attempt: int | None = None
    tenant_id: str | None = None
    pipeline_id: str | None = Field(
        None,
        description="The pipeline whose step made it (the job's `nexa.dev/pipeline` label, set by the gateway).",
    )
    code_version: str | None = Field(None, description="The Nexa release that wrote it (`nexa-forge 0.x`).")
    inputs: list[InputSource] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: list[FileEntry]
    signature: str | None = Field(
        None, description="Ed25519 signature (hex) over the manifest without this field."
    )
    signer: str | None = Field(None, description="Public key (hex) that made `signature`.")


class Dataset(BaseModel):
    """A registered dataset."""

    model_config = ConfigDict(extra="ignore")

    dataset_id: str
    name: str
    uri: str
    format: Literal["parquet", "jsonl", "csv"]
    num_rows: int | None = None
    size_bytes: int = 0
    sha256: str | None = None
    created_at: datetime
    job_id: str | None = None
    columns: list[str] = Field(default_factory=list)


# A model upload's files that run code when loaded (pickle) or imported: the gateway refuses them
# (`model_file_refused`), and the SDK leaves them out when safetensors weights are there instead.
MODEL_UPLOAD_REFUSED_SUFFIXES = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".py", ".pyc", ".so"}
)


class UploadedModel(BaseModel):
    """A model directory its owner uploaded: a base checkpoint, usable as a job's ``model``, ``teacher``
    or ``checkpoint_id``."""

    model_config = ConfigDict(extra="ignore")

    checkpoint_id: str
    name: str
    uri: str
    size_bytes: int = 0
    files: list[str] = Field(default_factory=list)
    created_at: datetime


class DatasetList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[Dataset]
    next_cursor: str | None = None


class ArtifactInfo(BaseModel):
    """A registered artifact (any kind) and its manifest."""

    model_config = ConfigDict(extra="ignore")

    artifact_id: str
    kind: ArtifactKind
    uri: str
    job_id: str | None = None
    created_at: datetime
    manifest: ArtifactManifest | None = None


class ArtifactList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[ArtifactInfo]
    next_cursor: str | None = None


DependentKind = Literal["artifact", "job", "deployment"]


class ArtifactDependent(BaseModel):
    """Something that needs an artifact: another artifact made from it, an unfinished job that names
    it, or a deployment still serving it."""

    model_config = ConfigDict(extra="ignore")

    kind: DependentKind
    id: str = Field(description="The dependent's id: a `ds_…`/`ckpt_…`/… artifact, a `job_…` or a `dp_…`.")
    reason: str = Field(description="How it depends on the artifact, in words.")
    blocking: bool = Field(
        description="True for an unfinished job or a serving deployment: not even `force=true` deletes past it. "
        "An artifact made from this one only needs `force=true`."
    )


class ArtifactDependents(BaseModel):
    """What depends on an artifact (`GET /v1/artifacts/{id}/dependents`), so a deletion's effect is
    known before it is asked for."""

    model_config = ConfigDict(extra="ignore")

    artifact_id: str
    dependents: list[ArtifactDependent] = Field(default_factory=list)
    deletable: bool = Field(description="Nothing depends on it: a plain DELETE removes it.")
    deletable_with_force: bool = Field(
        description="Only other artifacts depend on it: DELETE with `force=true` removes it, leaving them."
    )


class DeletedArtifact(BaseModel):
    model_config = ConfigDict(extra="ignore")

    artifact_id: str
    kind: ArtifactKind
    size_bytes: int = Field(0, description="What it stored, and no longer counts toward storage billing.")


class Deletion(BaseModel):
    """What a `DELETE` of an artifact, a dataset or a job removed."""

    model_config = ConfigDict(extra="ignore")

    deleted: list[DeletedArtifact] = Field(default_factory=list, description="The artifacts removed.")
    bytes_freed: int = Field(0, description="The sum of their `size_bytes`.")
    job_id: str | None = Field(
        None, description="The job removed (a job deletion), with its logs and events."
    )
    left_dependents: list[ArtifactDependent] = Field(
        default_factory=list,
        description="Artifacts made from what was deleted, kept by `force=true`: their inputs are gone.",
    )


def kind_of(artifact_id: str) -> str | None:
    """The artifact kind an id names (``ds_…`` → dataset), else ``None``."""
    prefix = id_prefix(artifact_id)
    return PREFIX_KINDS.get(prefix) if prefix else None


def artifact_uri(root: str, artifact_id: str) -> str:
    """URI of an artifact directory under a store root (``/path`` or ``s3://bucket/prefix``)."""
    kind = kind_of(artifact_id)
    if kind is None:
        raise ValueError(f"not an artifact id: {artifact_id!r}")
    return f"{root.rstrip('/')}/{KIND_DIRS[kind]}/{artifact_id}"


def get_dataset_uri(root: str, dataset_id: str) -> str:
    """Where dataset ``ds_…`` lives under ``root``."""
    if kind_of(dataset_id) != "dataset":
        raise ValueError(f"not a dataset id: {dataset_id!r}")
    return artifact_uri(root, dataset_id)


def get_checkpoint_uri(root: str, checkpoint_id: str) -> str:
    """Where checkpoint ``ckpt_…`` lives under ``root``."""
    if kind_of(checkpoint_id) != "checkpoint":
        raise ValueError(f"not a checkpoint id: {checkpoint_id!r}")
    return artifact_uri(root, checkpoint_id)


def get_eval_uri(root: str, eval_id: str) -> str:
    """Where evaluation ``ev_…`` lives under ``root``."""
    if kind_of(eval_id) != "eval":
        raise ValueError(f"not an evaluation id: {eval_id!r}")
    return artifact_uri(root, eval_id)


def get_deployment_info(root: str, deployment_id: str) -> dict[str, str]:
    """Where deployment ``dp_…`` keeps its record, and the record's file name."""
    if kind_of(deployment_id) != "deployment":
        raise ValueError(f"not a deployment id: {deployment_id!r}")
    uri = artifact_uri(root, deployment_id)
    return {"deployment_id": deployment_id, "uri": uri, "record": f"{uri}/deployment.json"}


DeploymentStatus = Literal["running", "stopping", "stopped"]


class Deployment(BaseModel):
    """A model served by a deploy job, and whether its serving process still runs."""

    model_config = ConfigDict(extra="ignore")

    deployment_id: str
    status: DeploymentStatus = Field(
        description="running; stopping (undeploy requested, process not yet gone); stopped."
    )
    checkpoint_id: str | None = None
    inference_url: str | None = Field(
        None,
        description="Where to call it: `{NEXA_PUBLIC_URL}/v1/inference/{id}` through the gateway when the "
        "gateway's public URL is set, else the serving process's own root.",
    )
    openai_base_url: str | None = Field(None, description="Base URL for OpenAI clients (`…/v1`).")
    serving_url: str | None = Field(None, description="The serving process's own root (inside the platform).")
    model_name: str | None = Field(None, description="The `model` value OpenAI requests send.")
    job_id: str | None = Field(None, description="The deploy job that started it.")
    host: str | None = None
    created_at: datetime


class DeploymentList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[Deployment]
    next_cursor: str | None = None
