"""The ``NexaJob`` and ``NexaEndpoint`` custom resources on the wire: names, labels, status and mapping.

Pure: maps between a ``NexaJob`` and the contracts (``nexajob_payload``,
``nexajob_object``), names its children and ids, and models the ``status`` the
operator writes. The CustomResourceDefinitions themselves are generated from the
contracts by ``nexa_operator.crdschema`` (``python -m nexa_operator.crdgen``
writes them to ``crds/``; a test fails when that folder is stale).

Field names inside ``spec`` are the contracts' own: ``spec.audit`` of a NexaJob is
the body of ``POST /v1/audit`` without the options every job shares, and those
options (``resources``, ``priority``, ``max_retries`` …) sit beside it in ``spec``.
``status`` is written by the operator and uses Kubernetes' camelCase.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nexa.contracts.common import JobOptions
from nexa.contracts.jobs import JobType
from nexa.ids import derived_id, is_id

_NAMESPACE_UNSAFE = re.compile(r"[^a-z0-9-]+")

GROUP = "nexa.run"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NEXAJOB_KIND = "NexaJob"
NEXAJOB_PLURAL = "nexajobs"
NEXAENDPOINT_KIND = "NexaEndpoint"
NEXAENDPOINT_PLURAL = "nexaendpoints"
CATEGORY = "nexa"

# Labels and annotations the gateway and the operator put on what they create.
LABEL_TENANT = "nexa.run/tenant"
LABEL_JOB_TYPE = "nexa.run/type"
LABEL_NEXAJOB = "nexa.run/nexajob"
LABEL_ATTEMPT = "nexa.run/attempt"
LABEL_ENDPOINT = "nexa.run/endpoint"
LABEL_IDEMPOTENCY = "nexa.run/idempotency"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# The operator's cleanup finalizer. NexaJobs are created with it already set, so the
# operator does not spend an extra write per NexaJob adding it (it still adds it to
# NexaJobs made without it, e.g. by ``kubectl apply``).
NEXAJOB_FINALIZER = "nexa.run/cleanup"

# The options every job type shares live at the top of ``spec``; the rest of a
# type's contract lives under ``spec.<type>``.
SHARED_FIELDS: tuple[str, ...] = tuple(JobOptions.model_fields)

NexaJobPhase = Literal["Pending", "Running", "Suspended", "Completed", "Failed", "Cancelled"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Completed", "Failed", "Cancelled"})
# The gateway's JobState for each phase (Suspended is still waiting to run).
PHASE_STATES: dict[str, str] = {
    "Pending": "pending",
    "Running": "running",
    "Suspended": "pending",
    "Completed": "completed",
    "Failed": "failed",
    "Cancelled": "cancelled",
}


# --- status models (written by the operator) ------------------------------------------


class _StatusModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Condition(_StatusModel):
    """One observation about the resource, Kubernetes-style."""

    type: str = Field(description="What is observed, e.g. JobCreated, PodScheduled, Complete, Failed.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(
        description="A CamelCase reason from a fixed list, e.g. Unschedulable, FatalExitCode."
    )
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: datetime | None = Field(None, alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class JobFailure(_StatusModel):
    """Why a NexaJob failed; the gateway shows it as the job's ``error``."""

    code: str = Field(description="Machine-readable reason, e.g. fatal_exit_code, deadline_exceeded.")
    message: str = ""
    retryable: bool = False


class NexaJobStatus(_StatusModel):
    """What the operator observed about a NexaJob."""

    phase: NexaJobPhase = Field(
        "Pending", description="Pending, Running, Suspended, Completed, Failed or Cancelled."
    )
    conditions: list[Condition] = Field(default_factory=list)
    attempts: int = Field(0, ge=0, description="Attempts started so far (one Kubernetes Job each).")
    progress: float = Field(0.0, ge=0.0, le=1.0, description="Fraction done, 0 to 1.")
    progress_percent: str | None = Field(
        None,
        alias="progressPercent",
        max_length=8,
        description='The same as a percentage ("42%"), for `kubectl get` to show.',
    )
    progress_message: str | None = Field(
        None, alias="progressMessage", max_length=256, description="What the engine said it is doing."
    )
    result: dict[str, Any] | None = Field(None, description="The engine's JSON result once completed.")
    error: JobFailure | None = None
    artifacts_uri: str | None = Field(
        None, alias="artifactsUri", description="Where the job's artifacts live."
    )
    job_name: str | None = Field(
        None, alias="jobName", description="The Kubernetes Job of the current attempt."
    )
    endpoint_name: str | None = Field(
        None, alias="endpointName", description="The NexaEndpoint a deploy made."
    )
    next_attempt_at: datetime | None = Field(
        None, alias="nextAttemptAt", description="When the next attempt starts after a retryable failure."
    )
    start_time: datetime | None = Field(None, alias="startTime")
    completion_time: datetime | None = Field(None, alias="completionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class NexaEndpointStatus(_StatusModel):
    """What the operator observed about a NexaEndpoint."""

    phase: Literal["Pending", "Ready", "Failed"] = "Pending"
    url: str | None = Field(None, description="Cluster URL of the inference service.")
    ready_replicas: int = Field(0, ge=0, alias="readyReplicas")
    replicas: int = Field(0, ge=0)
    backend: Literal["deployment", "kserve"] | None = Field(
        None, description="deployment (Deployment + Service) or kserve (an InferenceService)."
    )
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(None, alias="observedGeneration")


# --- NexaJob <-> contracts -----------------------------------------------------------------


def tenant_namespace(prefix: str, tenant_id: str) -> str:
    """The namespace that holds a tenant's NexaJobs: ``<prefix><tenant>``, made a valid DNS label."""
    body = _NAMESPACE_UNSAFE.sub("-", tenant_id.lower()).strip("-") or "tenant"
    name = f"{prefix}{body}"
    if len(name) > 63:
        digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:10]
        name = f"{name[: 63 - 11].rstrip('-')}-{digest}"
    return name


def resource_name(job_id: str) -> str:
    """The NexaJob name of a ``job_…`` id (Kubernetes names allow no underscore)."""
    return job_id.replace("_", "-", 1)


def job_id_of(name: str) -> str:
    """The ``job_…`` id a NexaJob name stands for (the reverse of ``resource_name``)."""
    return name.replace("-", "_", 1) if name.startswith("job-") else name


def nexajob_object(
    *,
    job_id: str,
    tenant_id: str,
    namespace: str,
    job_type: JobType,
    spec: JobOptions,
) -> dict[str, Any]:
    """The NexaJob resource for a validated contract spec: shared options on top, the rest under ``spec.<type>``."""
    payload = spec.model_dump(mode="json", exclude_none=True)
    body: dict[str, Any] = {"type": job_type.value, "tenant": tenant_id}
    body.update({k: v for k, v in payload.items() if k in SHARED_FIELDS})
    body[job_type.value] = {k: v for k, v in payload.items() if k not in SHARED_FIELDS}
    labels = {LABEL_TENANT: tenant_id, LABEL_JOB_TYPE: job_type.value, LABEL_MANAGED_BY: "nexa-gateway"}
    return {
        "apiVersion": API_VERSION,
        "kind": NEXAJOB_KIND,
        "metadata": {
            "name": resource_name(job_id),
            "namespace": namespace,
            "labels": labels,
            "finalizers": [NEXAJOB_FINALIZER],
        },
        "spec": body,
    }


def nexajob_payload(spec: dict[str, Any]) -> tuple[JobType, dict[str, Any]]:
    """The job type and its contract payload (what ``spec_for`` validates) from a NexaJob's ``spec``."""
    job_type = JobType(spec["type"])
    payload = {k: v for k, v in spec.items() if k in SHARED_FIELDS}
    typed = spec.get(job_type.value) or {}
    if not isinstance(typed, dict):
        raise ValueError(f"spec.{job_type.value} must be an object")
    payload.update(typed)
    return job_type, payload


# --- the engine container's side of the contract -----------------------------------------

ENGINE_CONTAINER = "engine"
EXIT_SUCCESS = 0
EXIT_RETRYABLE = 1
EXIT_FATAL = 3  # a non-retryable EngineError or an invalid spec: the NexaJob fails at once
TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of /dev/termination-log


def run_result_key(job_id: str, attempt: int) -> str:
    """Where, relative to the artifact store root, an attempt's result record lives."""
    return f"runs/{job_id}/attempt-{attempt}/result.json"


def run_progress_key(job_id: str, attempt: int) -> str:
    """Where a running attempt leaves its latest progress (``{"attempt", "fraction", "message"}``)."""
    return f"runs/{job_id}/attempt-{attempt}/progress.json"


def nexajob_job_id(name: str, uid: str) -> str:
    """The ``job_…`` id engines see for a NexaJob: its name's, or one derived from its uid for hand-made ones."""
    candidate = job_id_of(name)
    if is_id(candidate, "job"):
        return candidate
    return derived_id("job", uid)


def percent(fraction: float) -> str:
    """``progressPercent``'s text for a fraction (0.4237 → ``"42%"``)."""
    return f"{int(max(0.0, min(1.0, fraction)) * 100)}%"
