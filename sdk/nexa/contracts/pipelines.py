"""Pipelines: named steps of any job type, chained by their outputs, with gates between them.

A pipeline is declared once (a YAML or JSON file, ``POST /v1/pipelines``, or a ``NexaPipeline``
in cluster mode) and advanced by the platform: a step runs when every step it needs has
completed, its spec gets the earlier steps' outputs substituted in, and its gate decides
whether the pipeline goes on. These models are the schema of all three forms.

A step's ``spec`` is the request body of its job type (``POST /v1/<type>``). Any string in it
may hold placeholders, replaced when the step starts:

* ``{steps.<step>.outputs.<field>}`` — a field of an earlier step's typed result
  (``checkpoint_id`` of a train step, ``dataset_id`` of an audit step …);
* ``{steps.<step>.job_id}`` — the job that ran it;
* ``{params.<name>}`` — one of the pipeline's ``parameters``.

A string that is exactly one placeholder takes the value as it is (a number stays a number).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from nexa.contracts.common import LabelKey, LabelValue, StrictModel
from nexa.contracts.jobs import JobType

StepName = Annotated[str, StringConstraints(max_length=40, pattern=r"^[a-z][a-z0-9_-]{0,39}$")]
ParamName = Annotated[str, StringConstraints(max_length=40, pattern=r"^[a-z][a-z0-9_]{0,39}$")]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=200)]

# Labels the platform puts on a step's job (and only the platform: the gateway sets them over the
# spec's own); manifests and lineage name the pipeline from them.
RESERVED_LABEL_PREFIX = "nexa.dev/"
PIPELINE_LABEL = "nexa.dev/pipeline"
STEP_LABEL = "nexa.dev/pipeline-step"

QUALITY_TIERS: tuple[str, ...] = ("A+", "A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D")
"""An audit's quality tiers, best first (docs/audit.md)."""

QualityTier = Literal["A+", "A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D"]


class Gate(StrictModel):
    """Checked on a step's result once its job completes. A gate that does not hold fails the step
    (``gate_failed``, with the figures in the reason) and stops the pipeline; every condition set
    must hold."""

    min_quality_tier: QualityTier | None = Field(
        None, description="Audit steps: the audit's `quality_tier` is this tier or better (A+ … D)."
    )
    min_score: dict[MetricName, float] | None = Field(
        None,
        max_length=16,
        description="Evaluate steps: each named score is at least this (at most this for lower-is-better "
        "metrics such as perplexity).",
    )
    min_improvement: dict[MetricName, float] | None = Field(
        None,
        max_length=16,
        description="Evaluate steps: each named score beats the base model's by at least this (lower for "
        "lower-is-better metrics); the step needs `compare_base`.",
    )

    @model_validator(mode="after")
    def _something_to_check(self) -> Gate:
        if self.min_quality_tier is None and not self.min_score and not self.min_improvement:
            raise ValueError("a gate needs min_quality_tier, min_score or min_improvement")
        return self


class PipelineStep(StrictModel):
    """One step: a job of ``type`` built from ``spec`` once the steps it needs have completed."""

    name: StepName = Field(description="Unique within the pipeline; placeholders name steps by it.")
    type: JobType = Field(description="The job type the step runs.")
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="The job's request body (as for `POST /v1/<type>`); strings may hold `{steps.<step>.outputs."
        "<field>}`, `{steps.<step>.job_id}` and `{params.<name>}` placeholders.",
    )
    needs: list[StepName] = Field(
        default_factory=list,
        max_length=32,
        description="Earlier steps this one waits for besides those its placeholders name.",
    )
    approval: bool = Field(
        False,
        description="Wait for `POST /v1/pipelines/{id}/steps/{step}/approve` before the step's job is submitted.",
    )
    gate: Gate | None = Field(None, description="Conditions on the step's result for the pipeline to go on.")
    retries: int = Field(
        0,
        ge=0,
        le=10,
        description="Submit the step's job again this many times when it fails (each job still has its own "
        "max_retries for lost attempts).",
    )
    cache: bool = Field(
        True,
        description="Reuse the outputs of an earlier completed run of the same step type, spec and input "
        "contents instead of running it again (deploy steps always run).",
    )


class PipelineSpec(StrictModel):
    """A pipeline as submitted: ``POST /v1/pipelines``, a pipeline file, or a ``NexaPipeline``'s spec."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="A name to find the pipeline by (not unique).",
    )
    description: str = Field("", max_length=2000)
    steps: list[PipelineStep] = Field(min_length=1, max_length=32, description="The steps, in any order.")
    parameters: dict[ParamName, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Values `{params.<name>}` placeholders take (`nexa pipeline run --param name=value` sets them).",
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels of the pipeline, also put on every step's job.",
    )
    max_cost_cents: int | None = Field(
        None,
        ge=0,
        le=10**12,
        description="Budget of the whole pipeline in US cents: a step whose estimate passes what is left of it "
        "(after the earlier steps' estimates) fails with budget_exceeded.",
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A repeat submission with the same key returns the first pipeline instead of a new one.",
    )

    @model_validator(mode="after")
    def _well_formed(self) -> PipelineSpec:
        # Imported here: the planner imports this module for its types.
        from nexa.pipelineplan import check_pipeline

        problems = check_pipeline(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def step(self, name: str) -> PipelineStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


class PipelineState(StrEnum):
    """pending → running → completed | failed | cancelled (``waiting``: only approvals are left to go on)."""

    pending = "pending"
    running = "running"
    waiting = "waiting"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (PipelineState.completed, PipelineState.failed, PipelineState.cancelled)


class StepState(StrEnum):
    pending = "pending"  # waits for the steps it needs
    waiting_approval = "waiting_approval"  # ready, held for an approval
    running = "running"  # its job is submitted and not finished
    completed = "completed"  # its job completed and its gate held
    cached = "cached"  # an earlier run's outputs were reused; nothing ran
    failed = "failed"  # its job failed (retries used) or its gate did not hold
    cancelled = "cancelled"  # the pipeline was cancelled, or another step failed, while it ran
    skipped = "skipped"  # never started: the pipeline stopped first

    @property
    def done(self) -> bool:
        return self in (StepState.completed, StepState.cached)

    @property
    def finished(self) -> bool:
        return self not in (StepState.pending, StepState.waiting_approval, StepState.running)


class PipelineErrorCode(StrEnum):
    step_failed = "step_failed"  # a step's job failed after its retries
    gate_failed = "gate_failed"  # a step's gate did not hold
    budget_exceeded = "budget_exceeded"  # a step's estimate passed what is left of max_cost_cents
    step_refused = "step_refused"  # a step's job was refused at submission (its spec after substitution)
    output_missing = "output_missing"  # a placeholder names an output the earlier step's result lacks
    advance_failed = (
        "advance_failed"  # the platform could not move the pipeline on (an internal error, logged)
    )
    invalid_spec = "invalid_spec"  # a NexaPipeline applied by hand that the contract refuses (cluster mode)
    cancelled = "cancelled"  # the user cancelled the pipeline


class GateOutcome(BaseModel):
    model_config = ConfigDict(extra="ignore")

    passed: bool
    reason: str = Field(description="The figures the gate compared, in words.")


class PipelineStepStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    type: JobType
    status: StepState
    job_id: str | None = Field(None, description="The step's current (or last) job.")
    job_ids: list[str] = Field(
        default_factory=list, description="Every job the step submitted, oldest first."
    )
    tries: int = Field(0, description="Jobs submitted for the step in this run of the pipeline.")
    outputs: dict[str, Any] | None = Field(None, description="The step's job result, once it is done.")
    reason: str | None = Field(
        None, description="Why the step is in its state (a cache hit, a failure, a gate)."
    )
    cache_key: str | None = Field(None, description="sha256 of the step's type, spec and input contents.")
    cached_from: str | None = Field(None, description="The job whose outputs a cached step reused.")
    gate: GateOutcome | None = None
    approved_by: str | None = Field(None, description="The key that approved a step that needs approval.")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class PipelineError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str
    message: str
    step: str | None = None


class Pipeline(BaseModel):
    """A pipeline's status (``GET /v1/pipelines/{id}``)."""

    model_config = ConfigDict(extra="ignore")

    pipeline_id: str
    name: str
    status: PipelineState
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    runs: int = Field(1, description="1, plus one per resume.")
    error: PipelineError | None = None
    steps: list[PipelineStepStatus]
    spec: PipelineSpec
    labels: dict[str, str] = Field(default_factory=dict)


class PipelineList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[Pipeline]
    next_cursor: str | None = None


class PipelineEventKind(StrEnum):
    created = "created"
    step_waiting_approval = "step.waiting_approval"
    step_approved = "step.approved"
    step_started = "step.started"
    step_cached = "step.cached"
    step_retrying = "step.retrying"
    step_completed = "step.completed"
    step_failed = "step.failed"
    step_cancelled = "step.cancelled"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    resumed = "resumed"


class PipelineEvent(BaseModel):
    """One entry of a pipeline's timeline (``GET /v1/pipelines/{id}/events``, SSE)."""

    model_config = ConfigDict(extra="ignore")

    seq: int
    at: datetime
    kind: PipelineEventKind
    step: str | None = None
    job_id: str | None = None
    message: str = ""
