"""Artifact storage, shared by the gateway, the engines and the operator's images.

One interface (``ArtifactStore``) with a local-directory and an S3 backend,
manifests and their signatures, the tenant boundary every reference a job carries
is checked against (``access``, ``datasets``), the one outbound policy for URLs
the platform calls (``outbound``), and the deployment records serving processes
and the gateway share (``serving``). It imports nothing from the engines: the
gateway installs it without them. The store a worker reaches through the gateway
is the engines' (``nexa_engines.gateway_store``).

The S3 backend is imported lazily (``nexa_store.s3``) so that code
which only needs the interface or the local store does not import ``minio``.
"""

from nexa_store.base import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactWriter,
    IntegrityError,
    StoreUnavailable,
    check_artifact_id,
    kind_for_id,
)
from nexa_store.datasets import (
    DatasetRefError,
    ResolvedDataset,
    check_dataset_ref,
    detect_format,
    fetch_dataset,
)
from nexa_store.factory import store_from_config, store_from_env
from nexa_store.local import LocalArtifactStore
from nexa_store.signing import SignatureError, SigningKey, SigningUnavailable, verify_signature

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
