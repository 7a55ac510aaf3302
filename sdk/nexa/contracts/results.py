"""What each job type's result holds: one typed model per type, the SPEC's field names first.

Engines return these fields (the worker and ``run_one`` validate every result
against its type's model before reporting it, so a result that drifts from the
contract fails its attempt instead of reaching users); clients read them typed
with ``JobHandle.typed_result``. Results may carry more fields than listed
(engine details such as a train job's loss figures): the listed ones are the
contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nexa.contracts.jobs import JobType

LOWER_IS_BETTER = frozenset({"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter"})
"""Evaluation metrics where a smaller score is the better one."""


def lower_is_better(name: str) -> bool:
    """For a plain metric (``perplexity``) or a benchmark's (``wikitext/word_perplexity``, ``x/ter[filter]``)."""
    return name.rsplit("/", 1)[-1].split("[", 1)[0] in LOWER_IS_BETTER


class JobResult(BaseModel):
    """Base of every result: the named fields are the contract, others are kept as they come."""

    model_config = ConfigDict(extra="allow")


class AuditResult(JobResult):
    """SPEC §8.1."""

    dataset_id: str = Field(description="The scored dataset (`ds_…`).")
    overall_quality_score: float = Field(ge=0.0, le=5.0, description="Mean row score, 0–5.")
    quality_tier: str = Field(description="A+ … D (docs/audit.md).")
    metrics: dict[str, Any] = Field(description="Rows, flags, duplicates and score figures.")
    scored_dataset_uri: str = Field(description="`internal://ds_…/scored.parquet`.")
    report_uri: str
    report_json_uri: str
    num_rows: int = Field(ge=0)
    mean_score: float
    flag_counts: dict[str, int]
    exact_duplicates: int = Field(ge=0, description="Rows whose text repeats an earlier row exactly.")
    near_duplicates: int = Field(
        ge=0,
        description="Rows flagged near_duplicate: close copies of an earlier row, exact copies not counted.",
    )
    near_duplicate_clusters: int = Field(
        ge=0, description="Groups those near_duplicates rows fall into (0 exactly when near_duplicates is 0)."
    )
    judge_mean_score: float | None = None


class DistillResult(JobResult):
    """SPEC §8.2."""

    distilled_dataset_id: str
    sft_dataset_uri: str = Field(description="`internal://ds_…/sft.parquet`.")
    num_samples: int = Field(ge=0)
    estimated_tokens: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    empty_responses: int = Field(ge=0)
    resumed_samples: int = Field(ge=0)
    teacher: str
    student_model: str | None = None


class GenerateResult(JobResult):
    dataset_id: str
    generated_dataset_id: str
    sft_dataset_uri: str
    num_samples: int = Field(ge=0)
    estimated_tokens: int = Field(ge=0)
    resumed_samples: int = Field(ge=0)
    domain: str


class TrainResult(JobResult):
    """SPEC §8.3."""

    checkpoint_id: str
    checkpoint_uri: str
    train_metrics_uri: str
    loss_curve_uri: str
    gpu_hours: float = Field(ge=0.0)
    cpu_hours: float = Field(ge=0.0)
    base_model: str
    holdout_dataset_id: str | None = None
    steps_total: int = Field(ge=0)


class EvaluateResult(JobResult):
    """SPEC §8.4."""

    eval_id: str
    scores: dict[str, float | None]
    base_scores: dict[str, float | None] | None = None
    improvement: dict[str, float | None] | None = None
    report_uri: str
    report_html_uri: str
    num_samples: int = Field(ge=0)


class DeployResult(JobResult):
    """SPEC §8.5."""

    deployment_id: str
    inference_url: str
    openai_base_url: str
    model_name: str
    checkpoint_id: str
    hf_checkpoint_id: str | None = Field(
        None,
        description="A full-weights checkpoint loadable with transformers' from_pretrained: the deployed "
        "checkpoint itself, or its LoRA adapter merged into the base.",
    )
    hf_checkpoint_uri: str | None = Field(None, description="`internal://` URI of hf_checkpoint_id.")
    api_key: str | None = Field(None, description="The endpoint key (`nexa_ep_…`), for this endpoint only.")
    serving_url: str | None = Field(
        None, description="The serving process's own root, when inference_url is public."
    )


class ContainerResult(JobResult):
    """Whatever the container's job reported."""


RESULT_MODELS: dict[JobType, type[JobResult]] = {
    JobType.audit: AuditResult,
    JobType.distill: DistillResult,
    JobType.generate: GenerateResult,
    JobType.train: TrainResult,
    JobType.evaluate: EvaluateResult,
    JobType.deploy: DeployResult,
    JobType.container: ContainerResult,
}


def result_for(job_type: JobType | str, data: dict[str, Any]) -> JobResult:
    """``data`` validated as ``job_type``'s result model (``ValidationError`` when it is not one)."""
    return RESULT_MODELS[JobType(job_type)].model_validate(data)
