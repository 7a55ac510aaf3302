"""The pull-worker protocol: register, claim under a lease, heartbeat, report (fenced by attempt)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from nexa.contracts import (
    TERMINAL_STATES,
    ClaimedJob,
    ClaimRequest,
    FailReport,
    Heartbeat,
    HeartbeatAck,
    JobType,
    LogLines,
    ProgressReport,
    ResultReport,
    WorkerRegister,
    WorkerRegistered,
    spec_for,
)
from nexa.contracts.refs import referenced_artifacts
from nexa.contracts.workers import UsageRecord
from nexa_gateway.db import Job, JobReplica, Worker
from nexa_gateway.deps import CurrentWorker, SessionDep, StateDep, WorkerSecret
from nexa_gateway.errors import ApiError
from nexa_gateway.services import (
    billing,
    deployments,
    endpointkeys,
    grants,
    meshpolicy,
    nodes,
    nodestatus,
    queue,
    reportsigs,
    reputation,
    runningcaps,
    verification,
)
from nexa_gateway.services.artifacts import promote_artifacts
from nexa_gateway.state import AppState
from nexa_store.envelopes import EnvelopeError, ReportKind, verify_key_proof

router = APIRouter(prefix="/v1/workers", tags=["workers"])

JobIdPath = Annotated[str, Path(min_length=1, max_length=64)]
_CLAIM_POLL_SECONDS = 0.25


@router.post("/register", response_model=WorkerRegistered, status_code=201)
def register(
    body: WorkerRegister, node_token: WorkerSecret, session: SessionDep, state: StateDep
) -> WorkerRegistered:
    """Register a worker with its hardware; answers with its credential and the artifact store to use.

    With a node token the worker belongs to the token's tenant and claims only its jobs.
    """
    owner = node_token.tenant_id if node_token is not None else None
    if body.public_key is not None and nodestatus.is_revoked_key(session, body.public_key, owner):
        raise ApiError(
            403, "node_revoked", "this node's key was revoked by an admin: it cannot register again"
        )
    if body.public_key is not None:
        try:
            verify_key_proof(body.key_proof, body.public_key, datetime.now(UTC))
        except EnvelopeError as exc:
            raise ApiError(422, "key_proof_invalid", str(exc), field="key_proof") from exc
    if body.public_key is None and state.settings.require_node_signatures:
        raise ApiError(
            422,
            "validation_error",
            "this platform requires nodes to sign their reports: register with an Ed25519 public_key "
            "(nexa worker does this by itself)",
            field="public_key",
        )
    worker, token = queue.register_worker(session, body)
    if node_token is not None:
        nodes.record_owner(session, worker.id, node_token)
    session.commit()
    state.metrics.worker_registrations.inc()
    through_gateway = nodes.store_through_gateway(state.settings.worker_store_access, node_token is not None)
    return WorkerRegistered(
        worker_id=worker.id,
        token=token,
        lease_seconds=state.settings.lease_seconds,
        heartbeat_seconds=state.settings.heartbeat_seconds,
        # A worker that reaches the store through the gateway learns neither its location nor its layout.
        artifact_store={"kind": "gateway"} if through_gateway else state.store.describe(),
        allowed_roots=[str(p) for p in state.allowed_roots],
        trusted_keys=list(state.trust.keys),
        signed_since=state.trust.since,
    )


@router.post("/heartbeat", status_code=204, response_class=Response)
def worker_heartbeat(worker: CurrentWorker, session: SessionDep) -> Response:
    """The worker is alive (independent of any job)."""
    queue.touch_worker(session, worker.id)
    session.commit()
    return Response(status_code=204)


def _claim_once(state: AppState, worker: Worker, body: ClaimRequest) -> ClaimedJob | None:
    job_types = body.job_types
    with state.db.session() as session:
        owned = nodes.owner_of_worker(session, worker.id) is not None
        if nodes.store_through_gateway(state.settings.worker_store_access, owned):
            # A deployment's server outlives its job's lease, which scopes gateway store access.
            job_types = [
                t for t in (list(JobType) if job_types is None else job_types) if t is not JobType.deploy
            ]
        claimed = queue.claim_next_job(
            session,
            worker,
            job_types=job_types,
            lease_seconds=state.settings.lease_seconds,
            artifacts_root=state.store.root_uri,
            use_skip_locked=state.db.is_postgres,
            holdback=meshpolicy.holdback(state.settings),
        )
        if claimed is not None:
            # What the job's tenant may read besides its own artifacts; the worker narrows it further.
            roots, buckets = grants.granted(session, claimed.tenant_id)
            claimed.local_roots = [str(p) for p in grants.effective_roots(state.settings, roots)]
            claimed.s3_buckets = buckets
            # What the job names from the store, read once for the capabilities handed over with it.
            named = referenced_artifacts(spec_for(claimed.job_type, claimed.spec))
            claimed.endpoint_keys = grants.endpoint_keys(
                session, claimed.tenant_id, named, state.endpoint_secret
            )
            if claimed.job_type is JobType.deploy and state.endpoint_secret is not None:
                # The server checks callers against this hash; the key itself never leaves the gateway.
                claimed.endpoint_key_sha256 = endpointkeys.endpoint_key_sha256(
                    state.endpoint_secret, claimed.job_id
                )
            claimed.legacy_artifacts = grants.legacy_artifacts(session, state.trust, named)
            claimed.catalog = state.catalog
        queue.touch_worker(session, worker.id)
    if claimed is not None:
        state.job_changed([claimed.job_id])
        state.metrics.claims.labels(claimed.job_type.value).inc()
    return claimed


@router.post(
    "/claim", response_model=ClaimedJob, responses={204: {"description": "No job fits this worker now."}}
)
async def claim(
    body: ClaimRequest, worker: CurrentWorker, session: SessionDep, state: StateDep
) -> ClaimedJob | Response:
    """Claim the highest-priority pending job this worker can run, waiting up to `wait_seconds`."""
    await run_in_threadpool(session.commit)
    deadline = time.monotonic() + body.wait_seconds
    while True:
        claimed = await run_in_threadpool(_claim_once, state, worker, body)
        if claimed is not None:
            return claimed
        if time.monotonic() >= deadline:
            return Response(status_code=204)
        await asyncio.sleep(_CLAIM_POLL_SECONDS)


@router.post("/jobs/{job_id}/heartbeat", response_model=HeartbeatAck)
def job_heartbeat(
    job_id: JobIdPath, body: Heartbeat, worker: CurrentWorker, session: SessionDep, state: StateDep
) -> HeartbeatAck:
    """Extend the lease on an attempt; the answer says whether it is to stop, and why."""
    try:
        expires, cancel, stop = queue.heartbeat(
            session, worker.id, job_id, body.attempt, state.settings.lease_seconds
        )
    except Exception as exc:
        _refused(state, exc)
        raise
    session.commit()
    return HeartbeatAck(
        lease_expires_at=expires,
        cancel_requested=cancel,
        stop_code=stop.code if stop else None,
        stop_message=stop.message if stop else None,
    )


def _signed(
    state: AppState,
    session: Session,
    worker: Worker,
    job_id: str,
    kind: ReportKind,
    body: ResultReport | FailReport | LogLines,
) -> None:
    try:
        reportsigs.check(session, worker, job_id, kind, body)
    except ApiError:
        state.metrics.report_signatures_refused.inc()
        # A forged or mismatched signature costs the node's honesty (docs/mesh.md).
        reputation.report_refused(session, worker.id, meshpolicy.credit_policy(state.settings))
        session.commit()
        raise


def _refused(state: AppState, exc: Exception) -> None:
    if getattr(exc, "type", None) == "stale_attempt":
        state.metrics.stale_reports.inc()


@router.post("/jobs/{job_id}/progress", status_code=204, response_class=Response)
def progress(
    job_id: JobIdPath, body: ProgressReport, worker: CurrentWorker, session: SessionDep, state: StateDep
) -> Response:
    """Report how far the attempt has got, and what it has used so far (checked against its budgets)."""
    try:
        queue.report_progress(session, worker.id, job_id, body.attempt, body.progress, body.message)
        if body.usage:
            runningcaps.check_running(session, state.settings.prices(), job_id, body.attempt, body.usage)
    except Exception as exc:
        _refused(state, exc)
        raise
    session.commit()
    state.job_changed([job_id])
    return Response(status_code=204)


@router.post("/jobs/{job_id}/logs", status_code=204, response_class=Response)
def logs(
    job_id: JobIdPath, body: LogLines, worker: CurrentWorker, session: SessionDep, state: StateDep
) -> Response:
    """Append log lines to the attempt (a numbered batch once, however often it is sent)."""
    _signed(state, session, worker, job_id, "logs", body)
    try:
        queue.append_logs(session, worker.id, job_id, body.attempt, body.lines, body.seq)
    except Exception as exc:
        _refused(state, exc)
        raise
    session.commit()
    state.job_changed([job_id])  # wakes the job's log streams
    return Response(status_code=204)


@router.post("/jobs/{job_id}/complete", status_code=204, response_class=Response)
def complete(
    job_id: JobIdPath, body: ResultReport, worker: CurrentWorker, session: SessionDep, state: StateDep
) -> Response:
    """Finish the attempt with a result; its artifacts are promoted and its usage recorded once."""
    _signed(state, session, worker, job_id, "complete", body)  # as the node sent it, before anything changes
    # A deployment is offered at the gateway's public address when one is configured.
    body.result = deployments.with_public_urls(body.result, state.settings.public_url)
    try:
        done = queue.complete_job(
            session,
            worker.id,
            job_id,
            body,
            lambda job, ids: promote_artifacts(
                session,
                state.store,
                job,
                ids,
                state.platform_key,
                # A node with a key signed each manifest's digest in the report: the store must hold that.
                expected=body.manifests if reportsigs.public_key_of(session, worker.id) else None,
            ),
            book=state.settings.prices(),
        )
    except Exception as exc:
        _refused(state, exc)
        raise
    moved = _weigh_completion(state, session, worker, job_id, body.artifacts)
    session.commit()
    state.job_changed([job_id, *moved])
    state.metrics.jobs_finished.labels(done.job_type, done.status).inc()
    if done.job is not None:
        state.metrics.observe_job_finished(done.job)
    _count_usage(state, done)
    return Response(status_code=204)


def _weigh_completion(
    state: AppState, session: Session, worker: Worker, job_id: str, artifact_ids: list[str]
) -> list[str]:
    """The mesh's part of an accepted result: the node's record, the replica's verdict (from the
    outputs' hashes as the store holds them, not the node's word), a spot check. Returns the jobs
    this moved besides the job itself."""
    policy = meshpolicy.credit_policy(state.settings)
    reputation.attempt_finished(session, worker.id, policy)
    replica = session.get(JobReplica, job_id)
    spot_checks = state.settings.spot_check_share > 0
    if replica is None and not spot_checks:
        return []  # the common case: no replica to judge, no spot check to draw
    row = session.get(Job, job_id)
    if row is None:
        return []
    manifests = [state.store.read_manifest(a, verify=False) for a in artifact_ids]
    if replica is not None:
        verification.replica_completed(session, row, manifests, policy)
    if spot_checks:
        verification.maybe_spot_check(
            session,
            row,
            worker.id,
            manifests,
            share=state.settings.spot_check_share,
            below=state.settings.spot_check_below_reputation,
        )
    return [j for j in verification.related(session, [job_id]) if j != job_id]


def _count_usage(state: AppState, done: queue.Finished) -> None:
    count_usage(state, done.job_type, done.job.gpu_type if done.job is not None else None, done.usage)


def count_usage(state: AppState, job_type: str, gpu_type: str | None, usage: list[UsageRecord]) -> None:
    """Newly recorded usage and its price (at the book in force now, when it was recorded) as metrics."""
    book, now = state.settings.prices(), datetime.now(UTC)
    for item in usage:
        state.metrics.usage.labels(item.kind).inc(item.amount)
        cost = billing.charge(book, job_type, gpu_type, item.kind, item.amount, now)
        state.metrics.spend.labels(job_type).inc(float(cost))


@router.post("/jobs/{job_id}/fail", status_code=204, response_class=Response)
def fail(
    job_id: JobIdPath, body: FailReport, worker: CurrentWorker, session: SessionDep, state: StateDep
) -> Response:
    """Finish the attempt with an error; retryable errors requeue while attempts remain."""
    _signed(state, session, worker, job_id, "fail", body)
    try:
        done = queue.fail_job(
            session,
            worker.id,
            job_id,
            body,
            book=state.settings.prices(),
            promote=lambda job, ids: promote_artifacts(session, state.store, job, ids, state.platform_key),
            credit=meshpolicy.credit_policy(state.settings),
        )
    except Exception as exc:
        _refused(state, exc)
        raise
    moved = verification.related(session, [job_id]) if done.status in TERMINAL_STATES else []
    session.commit()
    state.job_changed([job_id, *moved])
    if done.changed and done.status in TERMINAL_STATES:
        state.metrics.jobs_finished.labels(done.job_type, done.status).inc()
    if done.job is not None:
        state.metrics.observe_job_finished(done.job)
    _count_usage(state, done)
    return Response(status_code=204)
