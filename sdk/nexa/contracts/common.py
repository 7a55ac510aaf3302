"""Options shared by every job request: resources, scheduling and bookkeeping."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.\-/]{0,61}[A-Za-z0-9])?$")]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=r"^[A-Za-z0-9_.\-]*$")]
# The mesh's tiers (docs/mesh.md); other names are node pools a platform team defines.
MESH_TIERS = ("cpu", "consumer-gpu", "hpc")
_NUMBERED_TIERS = dict(enumerate(MESH_TIERS))


def canonical_tier(value: Any) -> Any:
    """A tier as the API stores it: NEXAPod's spellings ('CPU', 'Consumer GPU', 'HPC', or their
    numbers 0, 1, 2) become 'cpu', 'consumer-gpu', 'hpc'; other names are lower-cased."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _NUMBERED_TIERS.get(value, value)
    if isinstance(value, str):
        return "-".join(value.strip().lower().replace("_", " ").split())
    return value


Tier = Annotated[
    str,
    BeforeValidator(canonical_tier),
    StringConstraints(max_length=32, pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"),
]


class StrictModel(BaseModel):
    """Base for every contract: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Resources(StrictModel):
    """What a job needs from the machine that runs it."""

    gpus: int = Field(0, ge=0, le=64, description="Number of GPUs (nvidia.com/gpu).")
    gpu_type: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="GPU model such as 'A100' or 'H100'; any GPU when unset.",
    )
    tier: Tier | None = Field(
        None,
        description="Worker tier: 'cpu', 'consumer-gpu' or 'hpc' (NEXAPod's 'CPU', 'Consumer GPU', 'HPC' "
        "are read as these), or a node pool a platform defines.",
    )
    cpu: float = Field(1.0, gt=0, le=512, description="CPU cores.")
    memory_gb: float = Field(2.0, gt=0, le=4096, description="Memory in GiB.")
    disk_gb: float | None = Field(None, gt=0, le=1_000_000, description="Free scratch disk in GiB.")
    gpu_memory_gb: float | None = Field(None, gt=0, le=4096, description="Memory of each GPU in GiB.")
    min_reputation: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Trust level: only nodes whose reputation is at least this run the job (0.5 is a new "
        "node's; docs/mesh.md). Cluster nodes are the platform's own and are not matched on it.",
    )


MetricName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")]


class ToleranceChecker(StrictModel):
    """What two replicas' outputs are compared on when ``compare`` is ``tolerance``."""

    metrics: list[MetricName] = Field(
        default_factory=list,
        max_length=64,
        description="Output metrics to compare (the outputs' manifest metrics and the result's fields, "
        "nested ones as 'a.b'); every metric both replicas report when empty.",
    )


class Verification(StrictModel):
    """Run the job on several nodes and accept its result only when enough of them agree (docs/mesh.md)."""

    replicas: int = Field(3, ge=2, le=9, description="Replicas started at once, each on a different node.")
    quorum: int | None = Field(
        None,
        ge=2,
        le=9,
        description="Replicas that must agree (at least 2: one replica agreeing with itself verifies nothing); "
        "a majority of ``replicas`` when unset.",
    )
    compare: Literal["exact", "tolerance"] = Field(
        "exact",
        description="'exact': the outputs' files have the same SHA-256 hashes; 'tolerance': their metrics "
        "agree within ``tolerance``.",
    )
    tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Relative difference allowed between two replicas' numbers (NEXAPod's 'tolerance').",
    )
    checker: ToleranceChecker | None = Field(None, description="Which metrics 'tolerance' compares.")
    max_replicas: int | None = Field(
        None,
        ge=2,
        le=16,
        description="Replicas in all, counting those started after a disagreement; replicas + 2 when unset.",
    )
    distinct_owners: bool = Field(
        False, description="Also place the replicas on nodes registered with different node tokens."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Verification:
        if self.quorum is not None and self.quorum > self.replicas:
            raise ValueError("quorum cannot be more than replicas")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError("max_replicas cannot be less than replicas")
        return self

    @property
    def needed(self) -> int:
        return self.quorum if self.quorum is not None else self.replicas // 2 + 1

    @property
    def most(self) -> int:
        return self.max_replicas if self.max_replicas is not None else min(16, self.replicas + 2)


class JobOptions(StrictModel):
    """Scheduling and bookkeeping options accepted by every job type."""

    resources: Resources = Field(default_factory=Resources, description="Hardware the job needs.")
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first; ties run oldest first.")
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Key/value labels to find the job by (the API and the SDK list jobs by label).",
    )
    metadata: dict[
        Annotated[str, StringConstraints(max_length=256)], Annotated[str, StringConstraints(max_length=4096)]
    ] = Field(
        default_factory=dict,
        max_length=64,
        description="Free-form annotations kept with the job (not indexed).",
    )
    timeout_seconds: int = Field(
        24 * 3600, ge=1, le=14 * 24 * 3600, description="Wall-clock limit for one attempt."
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=20,
        description="Attempts after the first when an attempt is lost (its worker or pod gone) or fails retryably.",
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A repeat submission with the same key returns the first job instead of a new one.",
    )
    max_cost_cents: int | None = Field(
        None,
        ge=0,
        le=10**12,
        description="Refuse the job (402 budget_exceeded) when its estimated charge is above this, in US cents.",
    )

    verification: Verification | None = Field(
        None,
        description="Run replicas on distinct nodes and accept the result their quorum agrees on "
        "(standalone mesh workers; docs/mesh.md).",
    )

    @field_validator("labels")
    @classmethod
    def _few_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 64:
            raise ValueError("at most 64 labels")
        return value

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 64 or any(len(k) > 256 or len(v) > 4096 for k, v in value.items()):
            raise ValueError("at most 64 entries, keys up to 256 and values up to 4096 characters")
        return value
