"""The pull-worker side of the SQL backend: register, claim under a lease, report, fence, reap.

Fencing: every write a worker makes is an UPDATE guarded by
``status = 'running' AND attempt = :attempt AND worker_id = :worker``. Once a
lease expires and the job is requeued (attempt + 1), the old worker's writes
match no row and are refused, so a late or resurrected worker can never
overwrite the attempt that replaced it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa.contracts import (
    TERMINAL_STATES,
    ClaimedJob,
    ErrorCode,
    FailReport,
    JobType,
    ResultReport,
    UsageRecord,
    WorkerRegister,
)
from nexa.contracts.billing import PriceBook
from nexa.ids import new_id
from nexa_gateway.db import (
    Job,
    JobLog,
    JobReplica,
    JobRequirement,
    JobTrust,
    LogBatch,
    NodeToken,
    Usage,
    Worker,
    WorkerKey,
    WorkerOwner,
    WorkerStatus,
    utcnow,
)
from nexa_gateway.errors import ApiError
from nexa_gateway.metrics import FinishedJob
from nexa_gateway.services import ledger, reputation, runningcaps, verification
from nexa_gateway.services.jobs import add_event, finished_job
from nexa_gateway.services.keys import generate_worker_token, hash_key, well_formed

log = logging.getLogger("nexa.gateway.queue")

# Attempts that end with these were lost to the platform, not to the job: their usage is not charged.
# (An attempt whose lease ran out reports nothing, so it is never charged either.)
PLATFORM_LOSSES = frozenset(
    {
        ErrorCode.worker_shutdown,
        ErrorCode.worker_revoked,
        ErrorCode.store_unavailable,
        ErrorCode.result_unwritable,
    }
)


def stale(job_id: str, attempt: int) -> ApiError:
    return ApiError(
        409,
        ErrorCode.stale_attempt,
        f"attempt {attempt} of job {job_id} is not current or not held by this worker; stop working on it",
    )


def register_worker(session: Session, body: WorkerRegister) -> tuple[Worker, str]:
    token = generate_worker_token()
    row = Worker(
        id=new_id("wrk"),
        name=body.name,
        token_hash=hash_key(token),
        hardware=body.hardware.model_dump(mode="json"),
        job_types=[t.value for t in body.job_types],
        version=body.version,
    )
    session.add(row)
    session.flush()
    if body.public_key is not None:
        session.add(WorkerKey(worker_id=row.id, public_key=body.public_key))
        session.flush()
    return row, token


def worker_for_token(session: Session, token: str) -> Worker | None:
    """The worker ``token`` belongs to; None also when the node token it registered with was revoked."""
    if not well_formed(token, prefix="nexaw_"):
        return None
    return session.scalar(
        select(Worker)
        .outerjoin(WorkerOwner, WorkerOwner.worker_id == Worker.id)
        .outerjoin(NodeToken, NodeToken.id == WorkerOwner.node_token_id)
        .outerjoin(WorkerStatus, WorkerStatus.worker_id == Worker.id)
        .where(Worker.token_hash == hash_key(token), NodeToken.revoked_at.is_(None))
        # A revoked node is refused on every route, as an unknown token is.
        .where(or_(WorkerStatus.state.is_(None), WorkerStatus.state != "revoked"))
    )


def touch_worker(session: Session, worker_id: str) -> None:
    session.execute(update(Worker).where(Worker.id == worker_id).values(last_seen_at=utcnow()))


def requirement_filters(hw: dict[str, Any]) -> list[Any]:
    """The claim query's conditions on a job's CPUs, memory, disk and GPU memory for a node offering
    ``hw``: each is met, unless the job states none or the node did not say (then it is not matched on)."""
    offered = [
        (JobRequirement.cpu, hw.get("cpu_count")),
        (JobRequirement.memory_gb, hw.get("memory_gb")),
        (JobRequirement.disk_gb, hw.get("disk_gb")),
        (JobRequirement.gpu_memory_gb, hw.get("gpu_memory_gb")),
    ]
    return [
        or_(column.is_(None), column <= float(value))
        for column, value in offered
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


@dataclass(frozen=True)
class Holdback:
    """Nodes below ``below`` reputation take unverified work only once it waited ``seconds``."""

    below: float = 0.0
    seconds: float = 0.0
    half_life_seconds: float = 30 * 86400.0


def claim_next_job(
    session: Session,
    worker: Worker,
    *,
    job_types: list[JobType] | None,
    lease_seconds: int,
    artifacts_root: str,
    use_skip_locked: bool,
    holdback: Holdback | None = None,
) -> ClaimedJob | None:
    """Hand the best pending job that fits this worker to it, or ``None``."""
    allowed = set(worker.job_types)
    if session.scalar(select(WorkerStatus.state).where(WorkerStatus.worker_id == worker.id)) is not None:
        return None  # draining (a revoked node never gets here): nothing new
    if job_types is not None:
        allowed &= {t.value for t in job_types}
    if not allowed:
        return None
    hw = worker.hardware
    query = (
        select(Job.id, Job.attempt)
        .outerjoin(JobRequirement, JobRequirement.job_id == Job.id)
        .where(
            Job.status == "pending",
            Job.job_type.in_(sorted(allowed)),
            Job.gpus <= int(hw.get("gpus", 0)),
            *requirement_filters(hw),
        )
        .order_by(Job.priority.desc(), Job.created_at, Job.id)
        .limit(8)
    )
    identity = verification.node_identity(session, worker)  # key, node token and owner in one query
    owner = identity[2]
    if owner is not None:  # a tenant's own node runs that tenant's jobs, never another's
        query = query.where(Job.tenant_id == owner)
    if hw.get("gpu_type"):
        query = query.where((Job.gpu_type.is_(None)) | (Job.gpu_type == hw["gpu_type"]))
    else:
        query = query.where(Job.gpu_type.is_(None))
    query = query.where((Job.tier.is_(None)) | (Job.tier == hw.get("tier", "cpu")))
    # One replica of a job per node.
    query = query.where(verification.claim_filter(identity[1] is not None, owned=owner is not None))
    policy = holdback or Holdback()
    record = identity[3]
    standing = (
        reputation.NEUTRAL
        if record is None
        else reputation.current(record, utcnow(), policy.half_life_seconds)
    )
    # The job's trust level: the node's reputation now, against the least the job accepts.
    query = query.outerjoin(JobTrust, JobTrust.job_id == Job.id).where(
        or_(JobTrust.min_reputation.is_(None), JobTrust.min_reputation <= standing)
    )
    if policy.seconds > 0 and standing < policy.below:
        # Unverified work goes to reputable nodes first; replicas are checked anyway.
        waited = utcnow() - timedelta(seconds=policy.seconds)
        query = query.where(or_(Job.created_at <= waited, Job.id.in_(select(JobReplica.job_id))))
    if use_skip_locked:
        # PostgreSQL: rows another claimer is looking at are skipped, not waited for.
        # Only the jobs' rows: the requirements and trust are the nullable sides of outer joins.
        query = query.with_for_update(skip_locked=True, of=Job)
    for job_id, attempt in session.execute(query, verification.claim_params(identity[0], identity[1])).all():
        now = utcnow()
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "pending", Job.attempt == attempt)
            .values(
                status="running",
                attempt=attempt + 1,
                worker_id=worker.id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempt_started_at=now,
                cancel_requested=False,
                progress=0.0,
                progress_message=None,
                updated_at=now,
            )
            .returning(Job)
        ).scalar_one_or_none()
        if won is None:
            continue  # someone else claimed it between our read and our write
        if not verification.on_claimed(session, job_id, worker, identity):
            _unclaim(session, job_id, attempt)  # another replica of this job reached this node first
            continue
        if won.started_at is None:
            won.started_at = now
        add_event(session, job_id, "claimed", f"claimed by worker {worker.name} ({worker.id})", attempt + 1)
        session.flush()
        return ClaimedJob(
            job_id=won.id,
            job_type=JobType(won.job_type),
            attempt=won.attempt,
            lease_expires_at=won.lease_expires_at or now,
            spec=won.spec,
            tenant_id=won.tenant_id,
            artifacts_uri=artifacts_root,
        )
    return None


def _unclaim(session: Session, job_id: str, attempt: int) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.attempt == attempt + 1)
        .values(
            status="pending", attempt=attempt, worker_id=None, lease_expires_at=None, attempt_started_at=None
        )
    )


def _fenced(job_id: str, attempt: int, worker_id: str) -> Any:
    return (
        (Job.id == job_id)
        & (Job.status == "running")
        & (Job.attempt == attempt)
        & (Job.worker_id == worker_id)
    )


def heartbeat(
    session: Session, worker_id: str, job_id: str, attempt: int, lease_seconds: int
) -> tuple[Any, bool, runningcaps.Stop | None]:
    """Extend the lease; returns (new expiry, cancel_requested, the platform's stop if it stopped it)."""
    now = utcnow()
    expiry = now + timedelta(seconds=lease_seconds)
    row = session.execute(
        update(Job)
        .where(_fenced(job_id, attempt, worker_id))
        .values(lease_expires_at=expiry)
        .returning(Job.cancel_requested)
    ).first()
    if row is not None:
        stop = runningcaps.stop_of(session, job_id, attempt) if row[0] else None
        return expiry, bool(row[0]), stop
    # A job the user cancelled while this attempt ran: tell the worker to stop, politely.
    cancelled = session.scalar(
        select(Job.id).where(
            Job.id == job_id, Job.status == "cancelled", Job.attempt == attempt, Job.worker_id == worker_id
        )
    )
    if cancelled is not None:
        return now, True, None
    raise stale(job_id, attempt)


def _new_batch(session: Session, job_id: str, attempt: int, seq: int, lines: list[str]) -> bool:
    digest = hashlib.sha256(json.dumps(lines).encode()).hexdigest()  # ["a\nb"] is not ["a", "b"]
    seen = session.get(LogBatch, (job_id, attempt, seq))
    if seen is None:
        try:
            with session.begin_nested():
                session.add(LogBatch(job_id=job_id, attempt=attempt, seq=seq, digest=digest))
                session.flush()
            return True
        except IntegrityError:
            seen = session.get(LogBatch, (job_id, attempt, seq))
    if seen is not None and seen.digest == digest:
        return False  # sent again after a lost answer: appended once
    raise ApiError(
        409,
        "log_batch_reused",
        f"log batch {seq} of attempt {attempt} of job {job_id} was already sent with other lines",
    )


def report_progress(
    session: Session, worker_id: str, job_id: str, attempt: int, progress: float, message: str | None
) -> None:
    changed = session.execute(
        update(Job)
        .where(_fenced(job_id, attempt, worker_id))
        .values(progress=progress, progress_message=message, updated_at=utcnow())
        .returning(Job.id)
    ).scalar_one_or_none()
    if changed is None:
        raise stale(job_id, attempt)


def append_logs(
    session: Session,
    worker_id: str,
    job_id: str,
    attempt: int,
    lines: list[str],
    seq: int | None = None,
) -> bool:
    """Append an attempt's log lines; False when this numbered batch was appended already."""
    if not lines:
        return True
    if seq is not None and not _new_batch(session, job_id, attempt, seq, lines):
        return False
    # Reserve a block of sequence numbers in the same fenced statement that proves we hold the lease.
    top = session.execute(
        update(Job)
        .where(_fenced(job_id, attempt, worker_id))
        .values(log_seq=Job.log_seq + len(lines))
        .returning(Job.log_seq)
    ).scalar_one_or_none()
    if top is None:
        raise stale(job_id, attempt)
    first = top - len(lines) + 1
    now = utcnow()
    session.execute(
        insert(JobLog),
        [
            {"job_id": job_id, "seq": first + i, "attempt": attempt, "at": now, "line": line[:16_384]}
            for i, line in enumerate(lines)
        ],
    )
    return True


def record_usage(
    session: Session, tenant_id: str, job_id: str, attempt: int, usage: list[UsageRecord]
) -> list[UsageRecord]:
    """Insert usage once per (job, attempt, kind); returns what was newly recorded."""
    totals: dict[str, float] = {}
    for item in usage:
        totals[item.kind] = totals.get(item.kind, 0.0) + item.amount
    recorded = []
    for kind, amount in totals.items():
        try:
            with session.begin_nested():
                row = Usage(tenant_id=tenant_id, job_id=job_id, attempt=attempt, kind=kind, amount=amount)
                session.add(row)
                session.flush()
                ledger.chain_usage(session, row)  # the same transaction: chained exactly when recorded
            recorded.append(UsageRecord(kind=kind, amount=amount))
        except IntegrityError:
            continue
    return recorded


@dataclass
class Finished:
    job_type: str
    status: str
    usage: list[UsageRecord]
    changed: bool = True  # False when the report only confirmed a state reached earlier
    job: FinishedJob | None = None  # set when this report moved the job to a terminal state


def complete_job(
    session: Session,
    worker_id: str,
    job_id: str,
    body: ResultReport,
    promote: Callable[[Job, list[str]], str | None],
    book: PriceBook | None = None,
) -> Finished:
    """Accept a result: promote the attempt's artifacts, record usage, mark completed."""
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(_fenced(job_id, body.attempt, worker_id))
        .values(
            status="completed",
            result=body.result,
            progress=1.0,
            # The status says how it ended, not the engine's last word while it ran.
            progress_message=f"completed (attempt {body.attempt})",
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
        )
        .returning(Job)
    ).scalar_one_or_none()
    if row is None:
        raise stale(job_id, body.attempt)
    artifacts_uri = promote(row, body.artifacts)
    if artifacts_uri:
        row.artifacts_uri = artifacts_uri
    usage = (
        body.usage
        if book is None
        else runningcaps.within_budget(session, book, row, body.attempt, body.usage)
    )
    if verification.is_spot_check(session, job_id):
        usage = []  # the platform checks its nodes at its own cost
    recorded = record_usage(session, row.tenant_id, job_id, body.attempt, usage)
    add_event(session, job_id, "completed", "job completed", body.attempt)
    session.flush()
    return Finished(row.job_type, "completed", recorded, job=finished_job(session, row))


def fail_job(
    session: Session,
    worker_id: str,
    job_id: str,
    body: FailReport,
    book: PriceBook | None = None,
    promote: Callable[[Job, list[str]], str | None] | None = None,
    credit: reputation.CreditPolicy | None = None,
) -> Finished:
    """Record a failed attempt: requeue when retryable with attempts left, else fail (or cancel).

    An attempt the platform stopped at a budget ends ``budget_exceeded`` whatever the worker says,
    keeps what it committed (a train job's checkpoint: ``promote``) and is charged within the budget.
    """
    row = session.scalar(select(Job).where(_fenced(job_id, body.attempt, worker_id)))
    if row is None:
        # The user cancelled during this attempt: the worker's 'cancelled' report is welcome but changes nothing.
        if body.code == ErrorCode.cancelled:
            done = session.scalar(select(Job).where(Job.id == job_id, Job.status == "cancelled"))
            if done is not None:
                return Finished(done.job_type, "cancelled", [], changed=False)
        raise stale(job_id, body.attempt)
    code, message, retryable = body.code, body.message, body.retryable
    stop = runningcaps.stop_of(session, job_id, body.attempt)
    if stop is not None:
        code, message, retryable = stop.code, stop.message, False
        if promote is not None and body.artifacts:
            kept = promote(row, body.artifacts)
            if kept:
                row.artifacts_uri = kept
                message += f"; what the attempt committed is kept ({', '.join(body.artifacts[:5])})"
    usage = (
        body.usage
        if book is None
        else runningcaps.within_budget(session, book, row, body.attempt, body.usage)
    )
    if code in PLATFORM_LOSSES:
        usage = []  # the platform lost the attempt (its node stopped, its store failed): not the tenant's bill
    recorded = record_usage(session, row.tenant_id, job_id, body.attempt, usage)
    _end_attempt(session, row, code=code, message=message, retryable=retryable, credit=credit)
    ended = finished_job(session, row) if row.status in TERMINAL_STATES else None
    return Finished(row.job_type, row.status, recorded, job=ended)


def end_attempt_of(session: Session, row: Job, *, code: str, message: str) -> None:
    """End a running attempt the platform took from its node (requeued while retries remain)."""
    _end_attempt(session, row, code=code, message=message, retryable=True)


def _end_attempt(
    session: Session,
    row: Job,
    *,
    code: str,
    message: str,
    retryable: bool,
    credit: reputation.CreditPolicy | None = None,
) -> None:
    """Finish the current attempt of a running job: retry it or fail it, fenced on the attempt."""
    now = utcnow()
    attempts_allowed = 1 + row.max_retries
    if code == ErrorCode.cancelled:
        values: dict[str, Any] = {"status": "cancelled", "finished_at": now}
        kind, text = "cancelled", message or "cancelled"
    elif retryable and row.attempt < attempts_allowed:
        values = {"status": "pending", "worker_id": None}
        kind = "requeued"
        text = f"attempt {row.attempt} failed ({code}: {message[:500]}); retrying ({row.attempt}/{attempts_allowed} used)"
    else:
        values = {"status": "failed", "finished_at": now}
        kind = "failed"
        suffix = f" after {row.attempt} attempts" if retryable else ""
        text = f"{code}: {message[:2000]}{suffix}"
    values["progress_message"] = {
        "cancelled": "cancelled",
        "pending": f"attempt {row.attempt} failed ({code}); waiting for attempt {row.attempt + 1}",
        "failed": f"failed: {code}",
    }[values["status"]]
    values.update(
        error_code=code if values["status"] != "pending" else row.error_code,
        error_message=(message if values["status"] != "pending" else row.error_message),
        error_retryable=retryable,
        lease_expires_at=None,
        updated_at=now,
    )
    changed = session.execute(
        update(Job)
        .where(Job.id == row.id, Job.status == "running", Job.attempt == row.attempt)
        .values(**values)
        .returning(Job.id)
    ).scalar_one_or_none()
    if changed is None:
        raise stale(row.id, row.attempt)
    add_event(session, row.id, kind, text, row.attempt)
    session.flush()
    session.refresh(row)
    if row.status in TERMINAL_STATES:
        verification.replica_ended(session, row, credit)  # a replica's end may start another


@dataclass
class Reaped:
    lease_expired: int
    changed: list[str]
    finished: list[FinishedJob] = field(default_factory=list)  # attempts that ended their job


def reap_expired(
    session: Session,
    on_finished: Callable[[str, str], None],
    credit: reputation.CreditPolicy | None = None,
) -> Reaped:
    """Requeue or fail running attempts whose lease ran out or that passed their timeout."""
    now = utcnow()
    expired = list(
        session.scalars(select(Job).where(Job.status == "running", Job.lease_expires_at < now).limit(100))
    )
    count = 0
    changed: list[str] = []
    finished: list[FinishedJob] = []
    for row in expired:
        lost_by, lost_job = row.worker_id, row.id
        try:
            with session.begin_nested():
                _end_attempt(
                    session,
                    row,
                    code=ErrorCode.lease_expired,
                    message=f"worker {row.worker_id} stopped heartbeating (lease ran out)",
                    retryable=True,
                    credit=credit,
                )
        except ApiError:
            continue  # the worker reported in the meantime
        if credit is not None and lost_by is not None:
            reputation.lease_lost(session, lost_by, lost_job, credit)
        count += 1
        changed.append(row.id)
        if row.status in TERMINAL_STATES:
            on_finished(row.job_type, row.status)
            finished.append(finished_job(session, row))

    def fail_for_good(row: Job, code: str, message: str) -> None:
        try:
            with session.begin_nested():
                _end_attempt(session, row, code=code, message=message, retryable=False, credit=credit)
        except ApiError:
            return  # the worker reported in the meantime
        changed.append(row.id)
        on_finished(row.job_type, row.status)
        finished.append(finished_job(session, row))

    for job_id, job_type in verification.expire_overdue(session, now):
        changed.append(job_id)
        on_finished(job_type, "failed")
    for row in runningcaps.unheeded(session, now):
        stop = runningcaps.stop_of(session, row.id, row.attempt)
        why = stop.message if stop else "stopped at its budget"
        fail_for_good(row, ErrorCode.budget_exceeded, f"{why}; the worker did not stop it")
    timed_out = list(
        session.scalars(
            select(Job).where(Job.status == "running", Job.attempt_started_at.is_not(None)).limit(500)
        )
    )
    for row in timed_out:
        started = row.attempt_started_at
        if started is None or (now - started).total_seconds() <= row.timeout_seconds:
            continue
        fail_for_good(
            row, ErrorCode.timeout, f"attempt ran longer than timeout_seconds={row.timeout_seconds}"
        )
    return Reaped(count, changed, finished)
