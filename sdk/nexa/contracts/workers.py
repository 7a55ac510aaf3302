"""The pull-worker protocol (SPEC §10–11).

A worker registers with its hardware profile and receives a worker token
(``nexaw_…``), distinct from user API keys. It then loops: claim a job under a
lease, heartbeat to extend the lease, report progress and logs, and finish with
a result or a failure. Every report names the attempt it belongs to; a report
for an attempt that is no longer current is refused with 409 (fencing), so a
worker that lost its lease can never overwrite the attempt that replaced it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nexa.contracts.catalog import CatalogEntry
from nexa.contracts.common import StrictModel, Tier
from nexa.contracts.jobs import JobType


class HardwareProfile(StrictModel):
    """What a node offers; a job is handed only to a node that meets all its resources. A figure the
    node leaves out is unknown and is not matched on."""

    cpu_count: int = Field(1, ge=1, le=4096)
    memory_gb: float | None = Field(None, gt=0, le=65_536, description="Memory in GiB.")
    disk_gb: float | None = Field(None, ge=0, le=10_000_000, description="Free disk of its work dir, GiB.")
    gpus: int = Field(0, ge=0, le=64)
    gpu_type: str | None = Field(None, max_length=64)
    gpu_memory_gb: float | None = Field(None, gt=0, le=4096, description="Memory of its smallest GPU, GiB.")
    gpu_driver: str | None = Field(None, max_length=64)
    os: str | None = Field(None, max_length=200)
    cpu_model: str | None = Field(None, max_length=200)
    cpu_gflops: float | None = Field(
        None, ge=0, le=1e7, description="Measured: float32 matrix multiply, GFLOP/s (the node's own probe)."
    )
    memory_gbps: float | None = Field(None, ge=0, le=1e5, description="Measured: memory copy, GB/s.")
    gpu_tflops: float | None = Field(
        None, ge=0, le=1e5, description="Measured: bf16 matrix multiply, TFLOP/s."
    )
    tier: Tier = Field("cpu", description="cpu, consumer-gpu or hpc by docs/mesh.md's rules, unless pinned.")


PublicKeyHex = Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]


class WorkerRegister(StrictModel):
    name: str = Field(
        min_length=1, max_length=200, description="Human-readable worker name, e.g. the hostname."
    )
    public_key: PublicKeyHex | None = Field(
        None,
        description="The node's Ed25519 public key (hex). Once given, every result the node reports must "
        "be signed with it (a DSSE envelope): docs/mesh.md.",
    )
    key_proof: SignedEnvelope | None = Field(
        None,
        description="Required with public_key: a DSSE envelope in which the key signs its own public half and "
        "the time (nexa_store.envelopes.NodeKey.key_proof), so no one registers a key they do not hold.",
    )
    hardware: HardwareProfile = Field(default_factory=HardwareProfile)
    job_types: list[JobType] = Field(
        default_factory=lambda: list(JobType),
        max_length=32,
        description="Job types this worker has engines for.",
    )
    version: str | None = Field(None, max_length=64)


class WorkerRegistered(BaseModel):
    model_config = ConfigDict(extra="ignore")

    worker_id: str
    token: str = Field(description="Worker credential (`nexaw_…`); send as `Authorization: Bearer`.")
    lease_seconds: int
    heartbeat_seconds: int
    artifact_store: dict[str, Any] = Field(
        description="How to reach the artifact store: {'kind': 'local', 'root': ...} or {'kind': 's3', ...}."
    )
    allowed_roots: list[str] = Field(
        default_factory=list,
        description="The server's ceiling for local paths; each job reads only its tenant's grants inside it.",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="The platform's manifest-signing public keys (hex): inputs named by id must carry one's signature.",
    )
    signed_since: datetime | None = Field(
        None, description="When signing was turned on: unsigned artifacts created before it stay readable."
    )


class ClaimRequest(StrictModel):
    job_types: list[JobType] | None = Field(
        None, max_length=32, description="Restrict the claim to these types."
    )
    wait_seconds: float = Field(0.0, ge=0.0, le=30.0, description="Long-poll up to this long for a job.")


class ClaimedJob(BaseModel):
    """A job handed to a worker: the attempt it must quote in every report."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    job_type: JobType
    attempt: int
    lease_expires_at: datetime
    spec: dict[str, Any]
    tenant_id: str
    artifacts_uri: str
    local_roots: list[str] = Field(
        default_factory=list,
        description="Local directories granted to the job's tenant; a worker reads only those inside its own roots.",
    )
    s3_buckets: list[str] = Field(default_factory=list, description="S3 buckets granted to the job's tenant.")
    legacy_artifacts: list[str] = Field(
        default_factory=list,
        description="Artifacts this job names that the gateway registered before manifest signing began "
        "(readable unsigned).",
    )
    endpoint_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Endpoint keys of the tenant's own deployments this job calls (a `dp_…` teacher), by id.",
    )
    endpoint_key_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="A deploy job's endpoint key, as its SHA-256: what the serving process checks callers "
        "against (the key itself stays with the gateway).",
    )
    catalog: dict[str, CatalogEntry] = Field(
        default_factory=dict,
        description="The platform's model catalog: what model names such as 'Mistral-7B' stand for.",
    )


class Heartbeat(StrictModel):
    attempt: int = Field(ge=1, le=100_000)


class HeartbeatAck(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lease_expires_at: datetime
    cancel_requested: bool = Field(False, description="The job is to stop; report how it ended.")
    stop_code: str | None = Field(
        None, description="Why the platform stops it (budget_exceeded); unset for the user's cancel."
    )
    stop_message: str | None = None


class UsageRecord(StrictModel):
    kind: str = Field(
        max_length=32, pattern=r"^[a-z_]{1,32}$", description="rows, tokens, prompt_tokens, gpu_seconds, …"
    )
    amount: float = Field(ge=0, le=1e15)


class ProgressReport(StrictModel):
    attempt: int = Field(ge=1, le=100_000)
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None = Field(None, max_length=2000)
    usage: list[UsageRecord] = Field(
        default_factory=list,
        max_length=64,
        description="The attempt's usage so far (totals): the gateway stops a job that reaches its budget.",
    )


class LogLines(StrictModel):
    attempt: int = Field(ge=1, le=100_000)
    lines: list[Annotated[str, StringConstraints(max_length=16_384)]] = Field(max_length=10_000)
    seq: int | None = Field(
        None,
        ge=1,
        le=10**9,
        description="The batch's number within the attempt, from 1: a batch sent again (a retry) is "
        "appended once, and another batch under a number already used is refused. Required with an envelope.",
    )
    envelope: SignedEnvelope | None = Field(
        None, description="The batch signed with the node's key; required once the node registered one."
    )


class DsseSignature(StrictModel):
    keyid: str = Field("", max_length=128)
    sig: str = Field(min_length=1, max_length=256, description="Base64 Ed25519 signature.")


class SignedEnvelope(StrictModel):
    """A DSSE envelope (in-toto's Dead Simple Signing Envelope, field names as the spec writes them):
    the signature covers PAE(payloadType, payload), and the payload is the report it came with."""

    payload: str = Field(max_length=8_000_000, description="Base64 of the signed bytes.")
    payloadType: str = Field(max_length=200)  # noqa: N815  (the DSSE spec's name)
    signatures: list[DsseSignature] = Field(min_length=1, max_length=4)


class ResultReport(StrictModel):
    attempt: int = Field(ge=1, le=100_000)
    result: dict[str, Any]
    artifacts: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list,
        max_length=1024,
        description="Artifact ids this attempt produced; registered only on acceptance.",
    )
    usage: list[UsageRecord] = Field(default_factory=list, max_length=64)
    manifests: dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")],
    ] = Field(
        default_factory=dict,
        max_length=1024,
        description="SHA-256 of each artifact's manifest as the node wrote it (its canonical JSON without "
        "signatures), so the node's signature on this report covers the manifests and, through them, "
        "every file's hash. Required for every artifact once the node registered a key.",
    )
    envelope: SignedEnvelope | None = Field(
        None, description="The report signed with the node's key; required once the node registered one."
    )


class FailReport(StrictModel):
    attempt: int = Field(ge=1, le=100_000)
    code: str = Field(min_length=1, max_length=100)
    message: str = Field(max_length=20_000)
    retryable: bool = Field(False, description="True when another attempt may succeed.")
    usage: list[UsageRecord] = Field(default_factory=list, max_length=64)
    artifacts: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list,
        max_length=1000,
        description="What the attempt committed before it ended; kept when the platform stopped it.",
    )
    envelope: SignedEnvelope | None = Field(
        None, description="The report signed with the node's key; required once the node registered one."
    )


class WorkerInfo(BaseModel):
    """A node of the fleet as the registry shows it."""

    model_config = ConfigDict(extra="ignore")

    worker_id: str
    name: str
    state: str = Field(
        description="`busy` (running an attempt), `idle`, `lost` (no heartbeat for 3 leases), `draining` "
        "(an admin drained it: it claims nothing new) or `revoked` (cut off for good)."
    )
    tier: str | None = None
    hardware: dict[str, Any] = Field(default_factory=dict)
    job_types: list[str] = Field(default_factory=list)
    version: str | None = None
    owner_tenant_id: str | None = Field(
        None, description="The tenant whose node this is; none for the platform's."
    )
    public_key: str | None = Field(None, description="The node's Ed25519 public key (hex), its identity.")
    running_jobs: list[str] = Field(default_factory=list)
    registered_at: datetime
    last_heartbeat_at: datetime
    verified_gflops: float | None = Field(
        None,
        description="float32 GFLOP/s the gateway measured with a benchmark challenge the node passed (its "
        "latest; none before one passed, or once one failed). `hardware.cpu_gflops` is the node's own claim.",
    )
    verified_at: datetime | None = Field(None, description="When that benchmark was verified.")
    tier_confirmed: bool | None = Field(
        None,
        description="Whether benchmarks confirm the node's tier (docs/mesh.md): `cpu` always; `consumer-gpu` "
        "and `hpc` only with a passed GPU benchmark; none for a tier with no rule.",
    )
    reputation: float = Field(
        0.5, description="0 to 1 from agreement, reliability and honesty; 0.5 with no record (docs/mesh.md)."
    )
    credits: float = Field(
        0.0, description="Credits for verified work, less penalties (`GET /v1/credits/{id}`)."
    )


class NodeAction(StrictModel):
    """Why a node is drained or revoked (kept with its status, shown in the log of what happened)."""

    reason: str = Field("", max_length=2000)


class WorkerList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[WorkerInfo]


# -- benchmark challenges (docs/mesh.md, "Measured throughput") -------------------------------------

BENCHMARK_MAX_N = 2048
BENCHMARK_MAX_REPS = 16
BENCHMARK_MAX_SPOT_CHECKS = 64
Sha256Hex = Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]


class BenchmarkChallenge(BaseModel):
    """A challenge the gateway issued to a node: build A_1..A_reps and B from the seed, compute every
    C_r = A_r @ B in float32, and commit to the SHA-256 of each row of each C_r."""

    model_config = ConfigDict(extra="ignore")

    challenge_id: str
    worker_id: str
    seed: str = Field(description="128 bits, hex: the SeedSequence entropy of every matrix.")
    n: int = Field(description="Each matrix is n×n float32.")
    reps: int = Field(description="How many products C_r (r = 1..reps) to compute.")
    spot_checks: int = Field(description="How many rows the gateway will ask for after the commitment.")
    issued_at: datetime
    expires_at: datetime = Field(description="The commitment and the proof must both arrive before it.")


class BenchmarkCommit(StrictModel):
    """Round one: the node's commitment, SHA-256 over the concatenated row digests (C_1's rows first)."""

    commitment: Sha256Hex


class BenchmarkRowRef(StrictModel):
    rep: int = Field(ge=1, le=BENCHMARK_MAX_REPS, description="Which product C_r (1-based).")
    row: int = Field(ge=0, lt=BENCHMARK_MAX_N, description="Which row of it (0-based).")


class BenchmarkSpotCheck(BaseModel):
    """The gateway's answer to a commitment: the rows it picked after receiving it."""

    model_config = ConfigDict(extra="ignore")

    challenge_id: str
    rows: list[BenchmarkRowRef]
    seconds: float = Field(description="Issue to commitment, by the gateway's clock: what is measured.")
    expires_at: datetime


class BenchmarkRow(StrictModel):
    rep: int = Field(ge=1, le=BENCHMARK_MAX_REPS)
    row: int = Field(ge=0, lt=BENCHMARK_MAX_N)
    values: str = Field(
        max_length=(4 * BENCHMARK_MAX_N + 2) // 3 * 4,
        description="Base64 of the row's n little-endian float32 values.",
    )


class BenchmarkProof(StrictModel):
    """Round two: every row digest (which must hash to the commitment) and the rows asked for."""

    row_hashes: list[Sha256Hex] = Field(
        max_length=BENCHMARK_MAX_N * BENCHMARK_MAX_REPS, description="reps × n digests, hex, C_1's first."
    )
    rows: list[BenchmarkRow] = Field(max_length=BENCHMARK_MAX_SPOT_CHECKS)


class BenchmarkResult(BaseModel):
    """A verified (or refused) benchmark: the throughput counts only the gateway's clock."""

    model_config = ConfigDict(extra="ignore")

    challenge_id: str
    worker_id: str
    status: str = Field(description="`passed` or `failed`.")
    gflops: float | None = Field(None, description="reps × 2n³ / seconds / 1e9; set when it passed.")
    n: int
    reps: int
    seconds: float | None = None
    verified_at: datetime
    detail: str = ""
