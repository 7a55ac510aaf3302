"""The mesh's verification, reputation and credits as the API returns them (docs/mesh.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ReplicaVerdict = Literal["pending", "agreed", "outlier", "failed", "cancelled"]
VerificationState = Literal["open", "agreed", "disagreed", "cancelled"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Replica(_Answer):
    """One run of a verified job on one node."""

    job_id: str = Field(description="The replica's own job (billed to the tenant; a spot check is not).")
    index: int = Field(description="0 for the first replica (a spot-checked job's own run).")
    status: str = Field(description="The replica job's state.")
    worker_id: str | None = Field(
        None,
        description="The node that ran it, where you may see the node (your tenant's, or any for an admin).",
    )
    digest: str | None = Field(
        None, description="SHA-256 over its outputs' file hashes, as the gateway verified them."
    )
    verdict: ReplicaVerdict = "pending"


class VerificationStatus(_Answer):
    """Where a verified (or spot-checked) job's replicas stand."""

    job_id: str
    state: VerificationState
    purpose: Literal["requested", "spot_check"] = Field(
        description="'requested': the tenant asked for replicas (and pays for them); 'spot_check': the "
        "platform re-ran the job to check the node that ran it (at its own cost)."
    )
    compare: Literal["exact", "tolerance"]
    quorum: int
    max_replicas: int
    agreed_digest: str | None = None
    decided_at: datetime | None = None
    replicas: list[Replica]


class NodeCredits(_Answer):
    """A node's credits and reputation (``GET /v1/credits/{node}``)."""

    worker_id: str
    name: str
    tier: str
    credits: float = Field(description="Credits granted minus penalties.")
    granted: float
    penalties: float
    verified_jobs: int = Field(description="Replicas of this node a quorum or a spot check accepted.")
    outliers: int = Field(description="Replicas of this node that disagreed with the accepted result.")
    lost_leases: int
    reputation: float = Field(description="0 to 1; 0.5 for a node with no record (docs/mesh.md).")
    verified_gflops: float | None = Field(
        None, description="Throughput the coordinator measured (benchmark); credits need it."
    )
    entries: list[CreditEntry] = Field(default_factory=list, description="The latest ledger entries.")


class CreditEntry(_Answer):
    seq: int
    kind: Literal["credit", "penalty"]
    credits: float
    job_id: str | None = None
    reason: str
    at: datetime


class LeaderboardRow(_Answer):
    rank: int
    worker_id: str
    name: str
    tier: str
    credits: float
    verified_jobs: int
    reputation: float


class Leaderboard(_Answer):
    rows: list[LeaderboardRow]


NodeCredits.model_rebuild()
