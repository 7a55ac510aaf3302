"""The standalone control plane's tables (SQLAlchemy 2.0), on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Budget(Base):
    """A tenant's monthly spending limit (its own table: adding it changes no existing one)."""

    __tablename__ = "budgets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    monthly_limit_cents: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerEntry(Base):
    """One entry of an append-only, hash-chained stream (``services.ledger``): usage today, the mesh's
    credits and the audit log of actions next. Each entry's hash covers its content and the previous
    entry's hash, so changing or removing any entry breaks the chain from there on."""

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("stream", "seq", name="uq_ledger_stream_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(100), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobStop(Base):
    """An attempt the platform stopped because its charge reached a budget (``services.runningcaps``).

    Its own table, not a column on ``jobs``: the worker learns of it at its next heartbeat, the
    attempt ends ``budget_exceeded`` whatever the worker reports, and it is billed at most
    ``allowed_cents``."""

    __tablename__ = "job_stops"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    allowed_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRequirement(Base):
    """What a job needs from the node that runs it beyond the ``jobs`` columns (GPUs, GPU type, tier):
    CPUs, memory, scratch disk and GPU memory, matched in the claim query itself. Its own table so the
    ``jobs`` table keeps its shape; a job without a row (submitted before it existed) matches any node."""

    __tablename__ = "job_requirements"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cpu: Mapped[float] = mapped_column(Float)
    memory_gb: Mapped[float] = mapped_column(Float)
    disk_gb: Mapped[float | None] = mapped_column(Float, default=None)
    gpu_memory_gb: Mapped[float | None] = mapped_column(Float, default=None)


class LogBatch(Base):
    """A numbered batch of log lines an attempt sent (``LogLines.seq``): the same batch sent again (a
    retry whose answer was lost) is appended once, and another batch under a used number (a replay
    of a signed batch) is refused."""

    __tablename__ = "log_batches"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))


class JobTrust(Base):
    """The least reputation a node must have to claim the job (``Resources.min_reputation``), matched
    in the claim query. A row only for jobs that state one."""

    __tablename__ = "job_trust"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    min_reputation: Mapped[float] = mapped_column(Float)


class JobVerification(Base):
    """A job the gateway accepts only when replicas on distinct nodes agree (``services.verification``):
    the tenant's ``verification`` (purpose ``requested``) or a platform spot check of a finished job
    (``spot_check``). The job itself runs nowhere; its replicas are jobs of their own."""

    __tablename__ = "job_verifications"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    compare: Mapped[str] = mapped_column(String(20))
    tolerance: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[list[str]] = mapped_column(JSON, default=list)
    quorum: Mapped[int] = mapped_column(Integer)
    max_replicas: Mapped[int] = mapped_column(Integer)
    distinct_owners: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(20), default="open")
    agreed_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    winner_job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)


class JobReplica(Base):
    """One replica of a verified job: which node ran it and what its outputs hashed to.

    ``node_key`` (the node's public key, or its worker id when it has none) is unique per verified
    job, so two replicas never land on one node, even one that registered again under a new id."""

    __tablename__ = "job_replicas"
    __table_args__ = (
        UniqueConstraint("parent_id", "node_key", name="uq_job_replicas_node"),
        UniqueConstraint("parent_id", "index", name="uq_job_replicas_index"),
    )

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    parent_id: Mapped[str] = mapped_column(String(40), index=True)
    index: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(40), default=None)
    node_key: Mapped[str | None] = mapped_column(String(64), default=None)
    owner_key: Mapped[str | None] = mapped_column(String(40), default=None)
    digest: Mapped[str | None] = mapped_column(String(64), default=None)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    verdict: Mapped[str] = mapped_column(String(20), default="pending")
    judged_at: Mapped[datetime | None] = mapped_column(default=None)


class NodeRecord(Base):
    """A node's standing (``services.reputation``): decayed counts of agreements, outliers, finished
    and lost attempts and refused reports, its reputation, and its credit balance (the sum of its
    entries in the ``credits`` ledger stream, kept here so the leaderboard is one query)."""

    __tablename__ = "node_records"

    node_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(40), index=True)
    agreed: Mapped[float] = mapped_column(Float, default=0.0)
    outliers: Mapped[float] = mapped_column(Float, default=0.0)
    finished: Mapped[float] = mapped_column(Float, default=0.0)
    lost: Mapped[float] = mapped_column(Float, default=0.0)
    refused: Mapped[float] = mapped_column(Float, default=0.0)
    reputation: Mapped[float] = mapped_column(Float, default=0.5)
    verified_jobs: Mapped[int] = mapped_column(Integer, default=0)
    outlier_count: Mapped[int] = mapped_column(Integer, default=0)
    lost_count: Mapped[int] = mapped_column(Integer, default=0)
    credits: Mapped[float] = mapped_column(Float, default=0.0, index=True)
    granted: Mapped[float] = mapped_column(Float, default=0.0)
    penalties: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEstimate(Base):
    """What a job was expected to cost when it was submitted (a ``CostEstimate``), kept to set
    beside what it was charged (``GET /v1/jobs/{id}/cost``): estimating later would use what the
    run itself taught (a measured rate), and so flatter the estimate."""

    __tablename__ = "job_estimates"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StripeCustomer(Base):
    """The Stripe customer a tenant is billed as (made by the meter-event sync on first use)."""

    __tablename__ = "stripe_customers"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StripeCursor(Base):
    """How far the meter-event sync has got through the usage table (the last usage id sent)."""

    __tablename__ = "stripe_sync"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_usage_id: Mapped[int] = mapped_column(BigInteger, default=0)


class StripeEvent(Base):
    """A Stripe webhook event applied once: a replay finds its id here and changes nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    created: Mapped[int] = mapped_column(BigInteger)  # Stripe's own time of the event
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class TenantPayment(Base):
    """Whether a tenant's last invoice was paid, as the newest Stripe event about it says."""

    __tablename__ = "tenant_payment"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # "active" or "payment_failed"
    reason: Mapped[str] = mapped_column(Text, default="")
    as_of: Mapped[int] = mapped_column(BigInteger)  # the created time of the event that set it
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PlatformMeta(Base):
    """Facts about this installation: when manifest signing began, which keys have signed."""

    __tablename__ = "platform_meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TenantGrant(Base):
    """A capability granted to one tenant beyond its own artifacts: a local root or an S3 bucket.

    Nothing is granted by default: local paths and foreign buckets are opt-in per tenant.
    """

    __tablename__ = "tenant_grants"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "value", name="uq_tenant_grants"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # "local_root" | "s3_bucket"
    value: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class KeyRole(Base):
    """A key's role (member, admin, platform_admin). A key without a row is an admin of its tenant:
    every key made before roles existed keeps the powers it had."""

    __tablename__ = "key_roles"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        Index("ix_jobs_queue", "status", "priority", "created_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    job_type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_type: Mapped[str | None] = mapped_column(String(64), default=None)
    tier: Mapped[str | None] = mapped_column(String(32), default=None)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=86400)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(40), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    attempt_started_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(Text, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error_code: Mapped[str | None] = mapped_column(String(100), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    error_retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    artifacts_uri: Mapped[str | None] = mapped_column(Text, default=None)
    log_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class JobLabel(Base):
    """Labels in their own table so that list filters are indexed SQL, not JSON scans."""

    __tablename__ = "job_labels"
    __table_args__ = (Index("ix_job_labels_kv", "tenant_id", "key", "value"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(63))
    tenant_id: Mapped[str] = mapped_column(String(40))


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)


class JobLog(Base):
    __tablename__ = "job_logs"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_logs_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    line: Mapped[str] = mapped_column(Text)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hardware: Mapped[dict[str, Any]]
    job_types: Mapped[list[Any]]
    version: Mapped[str | None] = mapped_column(String(64), default=None)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerKey(Base):
    """A node's Ed25519 public key, registered with it: every report it sends must be signed with it."""

    __tablename__ = "worker_keys"

    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id"), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerStatus(Base):
    """A node an admin drained (claims nothing new) or revoked (refused on every route; its key
    cannot register again). Its own table: the ``workers`` table keeps its shape."""

    __tablename__ = "worker_status"

    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))  # "draining" or "revoked"
    reason: Mapped[str] = mapped_column(Text, default="")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class NodeToken(Base):
    """A credential a tenant's admin made for registering its own nodes (workers).

    A node registered with it belongs to that tenant and claims only that tenant's
    jobs; revoking the token cuts off every node registered with it.
    """

    __tablename__ = "node_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class WorkerOwner(Base):
    """Which tenant owns a worker, and the node token it registered with (platform workers have no row)."""

    __tablename__ = "worker_owners"

    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    node_token_id: Mapped[str] = mapped_column(ForeignKey("node_tokens.id"), index=True)


class Artifact(Base):
    """A registered artifact: visible to its tenant only once the job that made it was accepted."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_tenant_kind", "tenant_id", "kind", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(20))
    uri: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(500), default="")
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    format: Mapped[str | None] = mapped_column(String(20), default=None)
    num_rows: Mapped[int | None] = mapped_column(BigInteger, default=None)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    columns: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Usage(Base):
    """Metered usage; one row per (job, attempt, kind) so a repeated report is billed once."""

    __tablename__ = "usage"
    __table_args__ = (UniqueConstraint("job_id", "attempt", "kind", name="uq_usage_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    job_id: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageSubject(Base):
    """What a usage row's ``job_id`` names when no standalone job row does: a NexaJob the cluster
    ran, or a tenant's stored artifacts for a month. The bill prices usage by its subject's type."""

    __tablename__ = "usage_subjects"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    job_type: Mapped[str] = mapped_column(String(20))  # a job type, or "storage"
    gpu_type: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArtifactInput(Base):
    """One artifact a registered artifact was made from (its manifest's ``inputs``), indexed when it is
    registered, so what a deletion would break is one indexed query instead of a manifest read per
    artifact. No foreign key: a forced deletion leaves its dependents' rows naming a gone input."""

    __tablename__ = "artifact_inputs"
    __table_args__ = (Index("ix_artifact_inputs_input", "tenant_id", "input_id"),)

    artifact_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    input_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))


READ_ONLY = "nexa_read_only"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and serialized writers so claims never race."""
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            # An in-memory database exists once per connection: share one.
            **({"poolclass": StaticPool} if memory else {"pool_size": 16, "max_overflow": 32}),
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A deferred transaction that later writes can fail with SQLITE_BUSY without
            # waiting; taking the write lock up front makes every writer queue instead.
            # Readers (marked read_only) need no lock at all under WAL.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)


def create_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine)


class Database:
    """An engine plus a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self.is_postgres = self.engine.dialect.name == "postgresql"

    def create_schema(self) -> None:
        create_schema(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it takes no write lock."""
        with self.read_sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()


class NodeBenchmark(Base):
    """A benchmark challenge issued to a node and how it ended (``services.benchmarks``): the node's
    throughput as the gateway measured and verified it. Times are the gateway's wall clock.

    ``status``: ``open`` (issued), ``committed`` (the commitment arrived, rows were picked),
    ``passed``, ``failed`` (a proof that did not check out, or a commitment never backed by one) or
    ``expired`` (no commitment in time)."""

    __tablename__ = "node_benchmarks"
    __table_args__ = (Index("ix_node_benchmarks_worker", "worker_id", "issued_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16), default="cpu")
    status: Mapped[str] = mapped_column(String(16), default="open")
    seed: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)
    reps: Mapped[int] = mapped_column(Integer)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    commitment: Mapped[str | None] = mapped_column(String(64), default=None)
    committed_at: Mapped[datetime | None] = mapped_column(default=None)
    spot_checks: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    gflops: Mapped[float | None] = mapped_column(Float, default=None)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    detail: Mapped[str] = mapped_column(Text, default="")


class WebhookEndpoint(Base):
    """A tenant's webhook endpoint (``services.webhooks``). ``secret`` signs every delivery, so it is
    kept as given out; ``failing_since``/``consecutive_failures`` count the current failure streak that
    disables the endpoint when it runs too long."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[Any]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(String(500), default="")
    secret: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint; its id is the ``webhook-id`` header on every try. ``body`` is the exact
    JSON sent (fixed at fan-out, so a retry or redelivery sends the same bytes). A sender claims a due
    row by moving ``next_attempt_at`` past its own send (a lease), so replicas never send one try twice."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_index: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookCursor(Base):
    """How far the webhook outbox has read the job_events table (the last event id fanned out)."""

    __tablename__ = "webhook_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)


class PipelineRow(Base):
    """A pipeline (``services.pipelines``): its spec as submitted and where it stands. ``version`` is
    bumped by every change, so an advance computed from an older read is dropped, not written over a
    cancel or another replica's advance."""

    __tablename__ = "pipelines"
    __table_args__ = (
        Index("ix_pipelines_tenant_created", "tenant_id", "created_at"),
        Index("ix_pipelines_status", "status"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_pipelines_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    runs: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    error_code: Mapped[str | None] = mapped_column(String(40), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    error_step: Mapped[str | None] = mapped_column(String(40), default=None)
    created_by: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class PipelineStepRow(Base):
    """One step of a pipeline: its current job and outcome. ``job_ids`` keeps every job it submitted."""

    __tablename__ = "pipeline_steps"
    __table_args__ = (Index("ix_pipeline_steps_job", "job_id"),)

    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    job_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    cache_key: Mapped[str | None] = mapped_column(String(64), default=None)
    cached_from: Mapped[str | None] = mapped_column(String(40), default=None)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    approved_by: Mapped[str | None] = mapped_column(String(40), default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class PipelineEventRow(Base):
    """A pipeline's timeline, numbered per pipeline (the SSE stream's ids)."""

    __tablename__ = "pipeline_events"
    __table_args__ = (UniqueConstraint("pipeline_id", "seq", name="uq_pipeline_events_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[str | None] = mapped_column(String(40), default=None)
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    message: Mapped[str] = mapped_column(Text, default="")


class PipelineCacheRow(Base):
    """A completed step's outputs by its cache key (type, resolved spec, input contents), per tenant."""

    __tablename__ = "pipeline_cache"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(40))
    pipeline_id: Mapped[str] = mapped_column(String(40))
    step: Mapped[str] = mapped_column(String(40))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleSession(Base):
    """A web console sign-in (``console/sessions.py``). The session id itself is only in the browser's
    cookie: the row keeps its SHA-256, and the API key encrypted with a key derived from that id, so the
    database alone does not give back a usable session or API key."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_encrypted: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditRow(Base):
    """One state-changing API action (``services.auditlog``). Append-only: triggers refuse UPDATE and
    DELETE on SQLite and PostgreSQL, so not even a bug in the application can rewrite history."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    tenant_id: Mapped[str | None] = mapped_column(String(40), default=None)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(200), default=None)
    status_code: Mapped[int] = mapped_column(Integer)
    client_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(200), default=None)


_AUDIT_APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
    ],
}


@event.listens_for(AuditRow.__table__, "after_create")
def _audit_log_append_only(target: Any, connection: Any, **_: Any) -> None:
    for statement in _AUDIT_APPEND_ONLY.get(connection.dialect.name, []):
        connection.exec_driver_sql(statement)
