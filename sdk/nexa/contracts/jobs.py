"""Job requests (one model per job type) and job status.

These models are the only schema: the HTTP API, the SDK, the engines' input and
(in cluster mode) the ``NexaJob`` CRD are all generated from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    UrlConstraints,
    model_validator,
)

from nexa.contracts.common import JobOptions, StrictModel
from nexa.contracts.refs import Ref

# Every field that names an input carries a Ref marker: the gateway and the worker
# check exactly the fields nexa.contracts.refs.job_references finds.
DatasetRef = Annotated[str, StringConstraints(min_length=1, max_length=2048), Ref("dataset")]
IdField = Annotated[str, StringConstraints(pattern=r"^[a-z]+_[a-z2-7]{26}$")]
CheckpointRef = Annotated[
    str, StringConstraints(max_length=40, pattern=r"^[a-z]+_[a-z2-7]{26}$"), Ref("checkpoint")
]
ModelRef = Annotated[str, StringConstraints(min_length=1, max_length=500), Ref("model")]
TeacherRef = Annotated[str, StringConstraints(min_length=1, max_length=500), Ref("teacher")]
UrlRef = Annotated[AnyHttpUrl, UrlConstraints(max_length=2048), Ref("url")]


class JobType(StrEnum):
    audit = "audit"
    distill = "distill"
    generate = "generate"
    train = "train"
    evaluate = "evaluate"
    deploy = "deploy"
    container = "container"


class JobState(StrEnum):
    """pending → running → completed | failed | cancelled."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.completed, JobState.failed, JobState.cancelled)


TERMINAL_STATES: frozenset[JobState] = frozenset({JobState.completed, JobState.failed, JobState.cancelled})
"""The states a job never leaves (the one definition; ``"completed" in TERMINAL_STATES`` holds too)."""


class ErrorCode(StrEnum):
    """How a job or an attempt ends other than completed, and the job-level conflicts: one name each,
    whichever component decides it (SQL queue, Kubernetes backend, pull worker, ``run_one``, operator).

    Engines add codes of their own (``dataset_not_found``, ``teacher_failed`` …, listed per
    engine in docs/engines.md); these are the ones the platform around them uses.
    """

    cancelled = "cancelled"  # the user cancelled the job
    lease_expired = "lease_expired"  # the worker holding the attempt stopped heartbeating
    timeout = "timeout"  # the attempt ran past its timeout_seconds
    worker_shutdown = "worker_shutdown"  # the process running the attempt was stopped (worker exit, pod stop)
    worker_revoked = "worker_revoked"  # an admin revoked the node running the attempt
    engine_crashed = "engine_crashed"  # the engine raised an error it did not name
    engine_not_installed = "engine_not_installed"  # the worker or image lacks the job type's engine
    invalid_spec = "invalid_spec"  # the stored spec does not validate (a NexaJob applied by hand)
    invalid_catalog = "invalid_catalog"  # the model catalog setting cannot be read
    store_unavailable = "store_unavailable"  # the artifact store could not be reached
    result_unwritable = "result_unwritable"  # the attempt's result record could not be written
    result_missing = "result_missing"  # the Job succeeded but left no result record
    result_invalid = "result_invalid"  # the engine's result does not match its type's result model
    attempt_failed = "attempt_failed"  # a pod failed without a code of its own
    fatal_exit_code = "fatal_exit_code"  # the engine exited with its "do not retry" code
    job_deleted = "job_deleted"  # the attempt's Kubernetes Job was deleted under it
    retries_exhausted = "retries_exhausted"  # every attempt max_retries allows was used
    endpoint_failed = "endpoint_failed"  # a NexaEndpoint's server failed
    endpoint_not_ready = "endpoint_not_ready"  # a NexaEndpoint did not become ready in time
    job_finished = "job_finished"  # 409: cancelling a job that already completed or failed
    idempotency_conflict = "idempotency_conflict"  # 409: an idempotency key reused with another body
    stale_attempt = "stale_attempt"  # 409: a report for an attempt that is no longer current
    budget_exceeded = "budget_exceeded"  # 402: the estimate passes max_cost_cents or the tenant's budget
    artifact_in_use = "artifact_in_use"  # 409: deleting what an artifact, a live job or a deployment needs
    job_not_finished = "job_not_finished"  # 409: deleting a job that is still pending or running
    not_supported = "not_supported"  # 501: this backend cannot do it (deleting cluster-mode jobs)
    node_revoked = "node_revoked"  # 403: a node whose key an admin revoked registers again


class JudgeConfig(StrictModel):
    """An OpenAI-compatible chat endpoint used as LLM-as-a-judge or teacher."""

    base_url: UrlRef = Field(description="Endpoint root, e.g. https://api.openai.com/v1.")
    model: str = Field(min_length=1, max_length=200, description="Model name sent in the request.")
    api_key_env: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Name of the environment variable on the worker that holds the API key.",
    )
    sample_size: int = Field(200, ge=1, le=100_000, description="Rows scored by the judge.")
    concurrency: int = Field(4, ge=1, le=64, description="Judge requests in flight at once.")
    timeout_seconds: float = Field(60.0, gt=0, le=600, description="Seconds to wait for one judge answer.")


class AuditSpec(JobOptions):
    """Score a dataset's quality: heuristics, exact and near duplicates, optional judge."""

    dataset_uri: DatasetRef = Field(
        validation_alias=AliasChoices("dataset_uri", "dataset_id"),
        description="Dataset to audit: a `ds_…` id, an `internal://`, `s3://` or `hf://datasets/…` URI, or a local "
        "path / `file://` URI under an allowed root. Also accepted as `dataset_id`.",
    )
    text_columns: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = Field(
        None, max_length=64, description="Columns holding text; detected from common names when unset."
    )
    ngram: int = Field(5, ge=1, le=32, description="Word n-gram size for near-duplicate shingles.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    near_dup_threshold: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="Word n-gram Jaccard similarity from which rows are near duplicates (found with recall "
        ">= 0.95 at it; see docs/audit.md for the curve).",
    )
    min_chars: int = Field(1, ge=0, description="Rows shorter than this are flagged `too_short`.")
    max_chars: int = Field(100_000, ge=1, description="Rows longer than this are flagged `too_long`.")
    judge: JudgeConfig | None = Field(None, description="Optional LLM-as-a-judge scoring.")
    seed: int = Field(1, ge=0, description="Seed for MinHash permutations.")


class DistillSpec(JobOptions):
    """Turn a prompt dataset into an SFT dataset with a teacher model."""

    dataset_id: DatasetRef = Field(
        validation_alias=AliasChoices("dataset_id", "dataset_uri"),
        description="Prompt dataset (`ds_…` id or URI). Also accepted as `dataset_uri` (Forge's name).",
    )
    teacher: TeacherRef | None = Field(
        None,
        description="Teacher: a model catalog name, 'provider/model' (OpenAI-compatible), a `dp_…` deployment, "
        "a `ckpt_…` checkpoint or a local model path; the platform's default teacher when unset.",
    )
    teacher_base_url: UrlRef | None = Field(None, description="OpenAI-compatible endpoint root.")
    teacher_api_key_env: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable on the worker holding the teacher's API key.",
    )
    student_model: ModelRef | None = Field(
        None,
        description="The model the SFT data is for (Forge's `student_model`); checked like any model and "
        "recorded in the dataset's manifest and the result. Train it with a train job.",
    )
    system_prompt: str | None = Field(
        None, max_length=20_000, description="System prompt sent to the teacher before each prompt."
    )
    max_samples: int | None = Field(
        None, ge=1, description="Distill at most this many prompts; all when unset."
    )
    max_tokens: int = Field(512, ge=1, le=32_768, description="Longest teacher answer, in tokens.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Teacher sampling temperature (0: greedy).")
    concurrency: int = Field(8, ge=1, le=256, description="Teacher requests in flight at once.")


class GenerateSpec(JobOptions):
    """Produce synthetic instruction data for a domain with a teacher model."""

    domain: str = Field(min_length=1, max_length=500, description="Subject area of the data.")
    num_samples: int = Field(100, ge=1, le=10_000_000, description="How many samples to produce.")
    teacher: TeacherRef | None = Field(
        None, description="As for distill; the platform's default teacher when unset."
    )
    teacher_base_url: UrlRef | None = Field(None, description="OpenAI-compatible endpoint root.")
    teacher_api_key_env: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable on the worker holding the teacher's API key.",
    )
    max_tokens: int = Field(512, ge=1, le=32_768, description="Longest generated sample, in tokens.")
    temperature: float = Field(0.9, ge=0.0, le=2.0, description="Teacher sampling temperature (0: greedy).")
    concurrency: int = Field(8, ge=1, le=256, description="Teacher requests in flight at once.")


class LoraConfig(StrictModel):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(16, ge=1, le=4096, description="LoRA scaling (alpha).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA layers.")
    target_modules: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None = Field(
        None,
        max_length=64,
        description="Module names to adapt; the model's attention projections when unset.",
    )


class TrainHyperparameters(StrictModel):
    learning_rate: float = Field(2e-5, gt=0, le=1.0, description="Peak learning rate (AdamW).")
    batch_size: int = Field(8, ge=1, le=4096, description="Sequences per optimizer micro-batch.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=4096, description="Micro-batches per optimizer step."
    )
    max_seq_len: int = Field(2048, ge=16, le=1_048_576, description="Longest training sequence, in tokens.")
    warmup_ratio: float = Field(
        0.03, ge=0.0, lt=1.0, description="Share of the steps spent warming the learning rate up."
    )
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    packing: bool = Field(True, description="Pack several samples into one sequence.")
    seed: int = Field(42, ge=0, description="Seed for shuffling, the hold-out split and initialisation.")


class TrainSpec(JobOptions):
    """Supervised fine-tuning of a causal language model."""

    dataset_id: DatasetRef = Field(
        validation_alias=AliasChoices("dataset_id", "dataset_uri"),
        description="SFT dataset (`ds_…` id or URI). Also accepted as `dataset_uri` (Forge's name).",
    )
    model: ModelRef | None = Field(
        None,
        description="Base model: a model catalog name (e.g. 'Mistral-7B'), a Hugging Face id (owner/name), "
        "a local path, or a `ckpt_…` checkpoint; the platform's default model when unset.",
    )
    epochs: int = Field(3, ge=1, le=1000, description="Passes over the dataset (the SPEC's default: 3).")
    hyperparameters: TrainHyperparameters = Field(
        default_factory=TrainHyperparameters, description="Optimizer and batching settings."
    )
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters instead of all weights.")
    checkpoint_every_steps: int = Field(
        500, ge=1, description="Save a resumable checkpoint every this many steps."
    )
    warm_start_checkpoint_id: CheckpointRef | None = Field(
        None, description="Start from this checkpoint's weights (`ckpt_…`)."
    )
    deepspeed_stage: Literal[0, 1, 2, 3] = Field(0, description="ZeRO stage on GPU; 0 disables DeepSpeed.")
    holdout_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=0.5,
        description="Share of the dataset held out of training and saved as the evaluation split; 0 keeps none.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps even if the epochs are not done."
    )


EvalMetric = Literal["exact_match", "accuracy", "perplexity", "judge"]


def _default_eval_metrics() -> list[EvalMetric]:
    return ["exact_match", "perplexity"]


BenchmarkMetric = Literal["acc", "acc_norm", "acc_mutual_info", "exact_match", "bleu", "chrf", "ter"]
TemplateText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class BenchmarkTask(StrictModel):
    """An lm-evaluation-harness task over the job's own dataset (its YAML's fields, as data).

    The platform supplies the data (the evaluate job's ``dataset_id``, resolved for its
    tenant); templates are Jinja, rendered in a sandbox, over one row's columns.
    """

    name: str = Field(
        "custom",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Task name in the report.",
    )
    output_type: Literal["multiple_choice", "generate_until"] = Field(
        "multiple_choice",
        description="`multiple_choice` scores each choice's log-likelihood; `generate_until` generates and "
        "compares the text.",
    )
    doc_to_text: TemplateText = Field(
        description="The prompt: a column name or a Jinja template over the row, e.g. '{{question}}\\nAnswer:'."
    )
    doc_to_target: TemplateText = Field(
        description="The answer: a column name or template (for multiple choice, the right choice's text or index)."
    )
    doc_to_choice: TemplateText | None = Field(
        None, description="Multiple choice: a column holding the list of choices, or a template giving one."
    )
    choices: list[Annotated[str, StringConstraints(max_length=1024)]] | None = Field(
        None,
        max_length=64,
        description="Multiple choice: the same choices for every row (instead of doc_to_choice).",
    )
    target_delimiter: str = Field(" ", max_length=16, description="Put between the prompt and an answer.")
    num_fewshot: int = Field(0, ge=0, le=32, description="Solved rows shown before each question.")
    metrics: list[BenchmarkMetric] | None = Field(
        None,
        max_length=8,
        description="lm-eval metrics; acc and acc_norm for multiple choice, exact_match for generation when unset.",
    )
    until: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: ["\n"], max_length=8, description="Generation stops at any of these."
    )
    max_gen_toks: int = Field(64, ge=1, le=4096, description="Most tokens generated per row.")

    @model_validator(mode="after")
    def _choices_for_multiple_choice(self) -> BenchmarkTask:
        has = (self.choices is not None) + (self.doc_to_choice is not None)
        if self.output_type == "multiple_choice" and has != 1:
            raise ValueError("a multiple_choice task takes its choices from one of choices or doc_to_choice")
        if self.output_type == "generate_until" and has:
            raise ValueError("a generate_until task has no choices")
        return self


class EvaluateSpec(JobOptions):
    """Evaluate a checkpoint on held-out data and/or with a judge."""

    checkpoint_id: CheckpointRef = Field(description="Checkpoint to evaluate (`ckpt_…`).")
    dataset_id: DatasetRef | None = Field(
        None,
        validation_alias=AliasChoices("dataset_id", "dataset_uri"),
        description="Evaluation data; the training hold-out when unset. Also accepted as `dataset_uri`.",
    )
    metrics: list[EvalMetric] = Field(
        default_factory=_default_eval_metrics, max_length=16, description="Metrics to compute."
    )
    judge: JudgeConfig | None = Field(None, description="LLM-as-a-judge scoring, for the judge metric.")
    compare_base: bool = Field(True, description="Also score the base model the checkpoint came from.")
    benchmark: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$",
        description="lm-evaluation-harness tasks or groups by name, comma-separated (e.g. 'mmlu' or "
        "'arc_easy,hellaswag'); their data must be in the worker's datasets cache.",
    )
    benchmark_task: BenchmarkTask | None = Field(
        None, description="An lm-evaluation-harness task over dataset_id (or the training hold-out)."
    )
    max_samples: int | None = Field(
        None, ge=1, description="Evaluate at most this many rows; all when unset."
    )


class DeploySpec(JobOptions):
    """Serve a checkpoint behind an OpenAI-compatible and OIP v2 endpoint."""

    checkpoint_id: CheckpointRef = Field(description="Checkpoint to serve (`ckpt_…`).")
    replicas: int = Field(1, ge=0, le=100, description="Serving replicas (Kubernetes; standalone runs one).")
    min_replicas: int = Field(1, ge=0, le=100, description="Fewest replicas when autoscaling.")
    max_replicas: int = Field(1, ge=1, le=100, description="Most replicas when autoscaling.")
    protocol: Literal["openai", "v2", "both"] = Field(
        "both", description="APIs served: OpenAI, Open Inference Protocol v2, or both."
    )
    max_batch_size: int = Field(16, ge=1, le=1024, description="Most requests decoded together in one batch.")


class ContainerSpec(JobOptions):
    """Any image and command: the field-agnostic workload."""

    image: str = Field(
        min_length=1,
        max_length=500,
        # An OCI reference ([registry[:port]/]name[:tag][@digest]); never an option a runtime would read.
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@+\-]*$",
        description="Container image reference.",
    )
    command: list[Annotated[str, StringConstraints(max_length=8192)]] = Field(
        default_factory=list, max_length=256, description="The entrypoint to run; the image's own when empty."
    )
    args: list[Annotated[str, StringConstraints(max_length=8192)]] = Field(
        default_factory=list, max_length=1024, description="Arguments to the command."
    )
    env: dict[
        Annotated[str, StringConstraints(max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
        Annotated[str, StringConstraints(max_length=32768)],
    ] = Field(default_factory=dict, max_length=256, description="Environment variables of the container.")
    network: bool | None = Field(
        None,
        description="Give the container a network. Standalone workers run it with none unless this is true; "
        "in cluster mode unset or true is the pod's network (the cluster's NetworkPolicies apply) and false "
        "is refused (not_supported).",
    )
    inputs: list[DatasetRef] = Field(
        default_factory=list,
        max_length=32,
        description="Datasets mounted read-only under /inputs (standalone workers): a `ds_…` id at "
        "/inputs/<ds_id>/, any other reference at /inputs/<its position>/. Not supported in cluster mode.",
    )

    @model_validator(mode="after")
    def _distinct_inputs(self) -> ContainerSpec:
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError("inputs names the same dataset twice")
        return self

    def cluster_gaps(self) -> list[str]:
        """What a Kubernetes Job cannot honour of this spec (the operator and the cluster backend refuse it)."""
        gaps = []
        if self.network is False:
            gaps.append(
                "network=false: cluster pods use the cluster's network policy; leave network unset there"
            )
        if self.inputs:
            gaps.append("inputs: mounting datasets into a container is supported by standalone workers only")
        return gaps


JOB_SPECS: dict[JobType, type[JobOptions]] = {
    JobType.audit: AuditSpec,
    JobType.distill: DistillSpec,
    JobType.generate: GenerateSpec,
    JobType.train: TrainSpec,
    JobType.evaluate: EvaluateSpec,
    JobType.deploy: DeploySpec,
    JobType.container: ContainerSpec,
}

AnyJobSpec = AuditSpec | DistillSpec | GenerateSpec | TrainSpec | EvaluateSpec | DeploySpec | ContainerSpec


def spec_for(job_type: JobType | str, payload: dict[str, Any]) -> JobOptions:
    """Validate ``payload`` as the request model of ``job_type``."""
    return JOB_SPECS[JobType(job_type)].model_validate(payload)


class JobEvent(BaseModel):
    """One entry of a job's timeline (state changes, claims, retries, errors)."""

    model_config = ConfigDict(extra="ignore")

    seq: int
    at: datetime
    kind: str = Field(
        description="e.g. created, claimed, running, progress, requeued, completed, failed, cancelled"
    )
    message: str = ""
    attempt: int = 0


class JobError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str = Field(description="Machine-readable reason, e.g. engine_not_installed, lease_expired.")
    message: str
    retryable: bool = False


class Job(BaseModel):
    """A job's status (SPEC §3.1 plus progress, attempts and events)."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    job_type: JobType
    user_id: str | None = Field(
        None, description="The account that owns the job: the tenant of the API key that submitted it."
    )
    status: JobState
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    logs_uri: str | None = Field(
        None, description="The job's log lines (SSE; `?follow=false` for what is stored), kept after it ends."
    )
    artifacts_uri: str | None = Field(
        None, description="Everything the job produced: `/v1/artifacts?job_id=…` in standalone mode."
    )
    error: JobError | None = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    progress_message: str | None = None
    attempts: int = 0
    max_retries: int = 0
    priority: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)
    events: list[JobEvent] = Field(default_factory=list)


class JobList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[Job]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null at the end."
    )
