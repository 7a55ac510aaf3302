"""The ``NexaPipeline`` custom resource on the wire: names, labels, annotations and status.

Pure, like ``nexa.contracts.nexajob``: a NexaPipeline's ``spec`` is the ``PipelineSpec``
contract (``nexa.contracts.pipelines``) with ``spec.name`` defaulting to the object's name;
the operator runs each step as a child ``NexaJob`` named by ``step_nexajob_name`` and
writes the ``status`` modelled here (Kubernetes' camelCase, like NexaJob's).

Users steer a running pipeline with annotations on it:

* ``nexa.run/approve-<step>: "true"`` releases a step declared with ``approval: true``;
* ``nexa.run/cancel: "true"`` cancels the pipeline (its running NexaJobs are cancelled).

Deleting the NexaPipeline deletes its NexaJobs too (they carry an owner reference to it).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nexa.contracts.jobs import JobType
from nexa.contracts.nexajob import Condition
from nexa.contracts.pipelines import GateOutcome, PipelineState, StepState

NEXAPIPELINE_KIND = "NexaPipeline"
NEXAPIPELINE_PLURAL = "nexapipelines"

# Labels on every NexaJob a NexaPipeline runs: the operator finds a pipeline's steps by them.
LABEL_PIPELINE = "nexa.run/pipeline"
LABEL_STEP = "nexa.run/step"
LABEL_TRY = "nexa.run/try"

APPROVE_ANNOTATION_PREFIX = "nexa.run/approve-"
CANCEL_ANNOTATION = "nexa.run/cancel"

# Kubernetes names of labels' values and of the NexaJobs (their Jobs' labels carry them) stop at 63.
MAX_NAME = 63

# What the operator does not take from a PipelineSpec in cluster mode: the object's name is
# already unique (no idempotency key), and no price book runs in the operator to hold a budget.
NOT_IN_CLUSTER_MODE: tuple[str, ...] = ("idempotency_key", "max_cost_cents")


def approve_annotation(step: str) -> str:
    """The annotation that approves ``step`` (``nexa.run/approve-<step>``)."""
    return f"{APPROVE_ANNOTATION_PREFIX}{step}"


def step_nexajob_name(pipeline: str, step: str, attempt: int) -> str:
    """The NexaJob that runs try ``attempt`` of ``step``: ``<pipeline>-<step>-<try>``, the same every time.

    Step names may hold ``_``, which Kubernetes names may not: such a name (or one over 63
    characters) is cut and made unique by a hash of the pipeline and step names.
    """
    safe = step.replace("_", "-")
    suffix = str(attempt)
    name = f"{pipeline}-{safe}-{suffix}"
    if safe == step and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{pipeline}\0{step}".encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{f'{pipeline}-{safe}'[:keep].rstrip('-.')}-{digest}-{suffix}"


# --- status models (written by the operator) ------------------------------------------


class _StatusModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class NexaPipelineStepStatus(_StatusModel):
    """One step of a NexaPipeline as the operator last saw it."""

    name: str
    type: JobType
    state: StepState = Field(
        StepState.pending,
        description="pending, waiting_approval, running, completed, failed, cancelled or skipped.",
    )
    nexa_job: str | None = Field(None, alias="nexaJob", description="The NexaJob of the step's current try.")
    job_id: str | None = Field(None, alias="jobId", description="The job id of that NexaJob (`job_…`).")
    tries: int = Field(0, ge=0, description="NexaJobs made for the step so far (one per try).")
    outputs: dict[str, Any] | None = Field(None, description="The step's job result, once it completed.")
    reason: str | None = Field(None, description="Why the step is in its state, in words.")
    gate: GateOutcome | None = Field(None, description="The gate's verdict on the step's result.")
    start_time: datetime | None = Field(None, alias="startTime")
    completion_time: datetime | None = Field(None, alias="completionTime")


class NexaPipelineFailure(_StatusModel):
    """Why a NexaPipeline failed or was cancelled."""

    code: str = Field(description="A PipelineErrorCode: step_failed, gate_failed, output_missing …")
    message: str = ""
    step: str | None = None


class NexaPipelineStatus(_StatusModel):
    """What the operator observed about a NexaPipeline."""

    phase: PipelineState = Field(
        PipelineState.pending, description="pending, running, waiting, completed, failed or cancelled."
    )
    current_step: str | None = Field(
        None,
        alias="currentStep",
        description="The steps running or waiting for approval now (comma-separated); the failed step once failed.",
    )
    steps: list[NexaPipelineStepStatus] = Field(default_factory=list, description="Every step, in run order.")
    error: NexaPipelineFailure | None = None
    conditions: list[Condition] = Field(default_factory=list)
    start_time: datetime | None = Field(None, alias="startTime")
    completion_time: datetime | None = Field(None, alias="completionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")
    tenant: str | None = Field(
        None,
        max_length=63,
        description="The tenant its steps run for, pinned at the first reconcile from the nexa.run/tenant label.",
    )

    def step(self, name: str) -> NexaPipelineStepStatus | None:
        return next((s for s in self.steps if s.name == name), None)
