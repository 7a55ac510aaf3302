"""Nexa: run the model pipeline (audit, distill, generate, train, evaluate, deploy) as remote jobs.

::

    from nexa import NexaClient

    client = NexaClient()                  # key and URL from the env or `nexa up`
    job = client.audit(dataset_uri="ds_...")
    client.status(job["job_id"]).status

See docs/sdk.md. Exceptions are documented in ``nexa.errors``. The job error
model of the contracts (``code``, ``message``) is ``nexa.contracts.JobError``;
``nexa.JobError`` is the exception.
"""

from nexa._core import __version__
from nexa.async_client import AsyncNexaClient
from nexa.client import NexaClient
from nexa.contracts import (
    ApiKeyCreated,
    ApiKeyInfo,
    ArtifactInfo,
    ArtifactKind,
    ArtifactManifest,
    AuditSpec,
    ContainerSpec,
    Dataset,
    DeploySpec,
    DistillSpec,
    EvaluateSpec,
    GenerateSpec,
    Job,
    JobEvent,
    JobOptions,
    JobState,
    JobType,
    JudgeConfig,
    LoraConfig,
    Resources,
    TrainHyperparameters,
    TrainSpec,
)
from nexa.contracts.lineage import Lineage, LineageEdge, LineageNode
from nexa.contracts.pipelines import Pipeline, PipelineEvent, PipelineSpec, PipelineState, StepState
from nexa.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    InternalServerError,
    JobCancelledError,
    JobError,
    JobFailedError,
    NexaError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    PipelineFileError,
    PipelineWaitTimeoutError,
    RateLimitError,
    UnprocessableEntityError,
    ValidationError,
    WaitTimeoutError,
)
from nexa.handles import AsyncJobHandle, BaseJobHandle, JobHandle, LogLine
from nexa.pipelinefile import load_pipeline

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ApiKeyCreated",
    "ApiKeyInfo",
    "ArtifactInfo",
    "ArtifactKind",
    "ArtifactManifest",
    "AsyncJobHandle",
    "AsyncNexaClient",
    "AuditSpec",
    "AuthenticationError",
    "BadRequestError",
    "BaseJobHandle",
    "ConfigError",
    "ConflictError",
    "ContainerSpec",
    "Dataset",
    "DeploySpec",
    "DistillSpec",
    "EvaluateSpec",
    "GenerateSpec",
    "InternalServerError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobHandle",
    "JobOptions",
    "JobState",
    "JobType",
    "JudgeConfig",
    "Lineage",
    "LineageEdge",
    "LineageNode",
    "LogLine",
    "LoraConfig",
    "NexaClient",
    "NexaError",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "Pipeline",
    "PipelineEvent",
    "PipelineFileError",
    "PipelineSpec",
    "PipelineState",
    "PipelineWaitTimeoutError",
    "RateLimitError",
    "Resources",
    "StepState",
    "TrainHyperparameters",
    "TrainSpec",
    "UnprocessableEntityError",
    "ValidationError",
    "WaitTimeoutError",
    "load_pipeline",
    "__version__",
]
