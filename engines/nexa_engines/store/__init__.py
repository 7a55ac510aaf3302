"""Artifact storage: one interface (``ArtifactStore``), a local-directory and an S3 backend.

The S3 backend is imported lazily (``nexa_engines.store.s3``) so that code
which only needs the interface or the local store does not import ``minio``.
"""

from nexa_engines.store.base import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactWriter,
    IntegrityError,
    StoreUnavailable,
    check_artifact_id,
    kind_for_id,
)
from nexa_engines.store.datasets import (
    DatasetRefError,
    ResolvedDataset,
    check_dataset_ref,
    detect_format,
    fetch_dataset,
)
from nexa_engines.store.factory import store_from_config, store_from_env
from nexa_engines.store.local import LocalArtifactStore
from nexa_engines.store.signing import SignatureError, SigningKey, SigningUnavailable, verify_signature

__all__ = [
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactWriter",
    "DatasetRefError",
    "IntegrityError",
    "LocalArtifactStore",
    "ResolvedDataset",
    "SignatureError",
    "SigningKey",
    "SigningUnavailable",
    "StoreUnavailable",
    "check_artifact_id",
    "check_dataset_ref",
    "detect_format",
    "fetch_dataset",
    "kind_for_id",
    "store_from_config",
    "store_from_env",
    "verify_signature",
]
