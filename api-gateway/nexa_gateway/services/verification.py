"""Redundant execution: a job accepted only when replicas on distinct nodes agree (docs/mesh.md).

A verified job (``verification`` in its spec) never runs itself. At submission it is marked
``running`` and gets ``replicas`` child jobs: ordinary jobs of the same tenant and spec (so the
queue, leases, retries and billing are the ones every job has), each with a ``job_replicas`` row.
The claim query hands a node at most one replica of a job (``claim_filter``). When a replica
completes, the gateway hashes its outputs from the files it verified itself (``digest``), never from
the node's word, and ``decide`` looks for ``quorum`` replicas that agree: the job then completes
with their result, the others are outliers. Too few replicas left to reach the quorum starts
another (up to ``max_replicas``), and past that the job fails ``quorum_not_reached``.

A spot check is the same mechanism run by the platform on a job that already completed on a node
below the trust level (``maybe_spot_check``): the job's own run is replica 0; one more replica runs
elsewhere at the platform's cost, a third when the two disagree.

Reputation and credits follow the verdicts (``services.reputation``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from nexa.contracts import ArtifactManifest, JobOptions, JobType
from nexa.contracts.mesh import Replica, VerificationStatus
from nexa_gateway.db import (
    Job,
    JobReplica,
    JobVerification,
    NodeRecord,
    Worker,
    WorkerKey,
    WorkerOwner,
    utcnow,
)
from nexa_gateway.errors import ApiError
from nexa_gateway.services import reputation
from nexa_gateway.services.jobs import add_event, get_job_row

log = logging.getLogger("nexa.gateway.verification")

QUORUM_NOT_REACHED = "quorum_not_reached"
REPLICA_LABEL = "nexa.dev/replica-of"
SPOT_CHECK_LABEL = "nexa.dev/spot-check-of"

# Result fields that name things rather than measure them: never compared.
_NAMING_SUFFIXES = ("_id", "_uri", "_url", "_path", "uri", "url")


# ---------------------------------------------------------------- pure parts (table-tested)


def comparable(value: Any) -> Any:
    """``value`` without the fields that name things (ids, URIs, paths), which differ between
    replicas by design."""
    if isinstance(value, dict):
        return {
            k: comparable(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.endswith(_NAMING_SUFFIXES))
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(manifests: Iterable[ArtifactManifest], result: dict[str, Any] | None = None) -> str:
    """SHA-256 over every output file's kind, path and hash, each output's metrics and the result:
    equal exactly when the replicas wrote the same bytes and reported the same numbers.

    Artifact ids, job ids, URIs, timestamps and signatures differ between replicas by design and are
    left out. The result counts: the job completes with the winning replica's result, so a replica that
    wrote the right files but reported other numbers must not agree.
    """
    found = list(manifests)
    lines = sorted(f"{m.kind}/{f.path} {f.sha256} {f.size}" for m in found for f in m.files)
    lines += sorted(f"metrics:{m.kind} {_canonical(comparable(m.metrics))}" for m in found)
    lines.append(f"result {_canonical(comparable(result or {}))}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def numbers(manifests: Iterable[ArtifactManifest], result: dict[str, Any] | None) -> dict[str, float]:
    """The numbers two replicas' outputs are compared on: manifest metrics and result fields, flat."""
    found: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            found[prefix] = float(value)
        elif isinstance(value, int | float):
            found[prefix] = float(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(key, str) and not key.endswith(_NAMING_SUFFIXES):
                    walk(f"{prefix}.{key}" if prefix else key, inner)

    for manifest in manifests:
        walk("", manifest.metrics)
    walk("", result or {})
    return found


def within(a: float, b: float, tolerance: float) -> bool:
    """NEXAPod's tolerance: relative to the larger magnitude, absolute below 1."""
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def agree(
    a: dict[str, Any], b: dict[str, Any], *, compare: str, tolerance: float, metrics: list[str]
) -> bool:
    """Whether two replicas' outputs (``{"digest": ..., "numbers": {...}}``) agree."""
    if compare == "exact":
        return a.get("digest") is not None and a.get("digest") == b.get("digest")
    left, right = a.get("numbers") or {}, b.get("numbers") or {}
    keys = list(metrics) if metrics else sorted(set(left) | set(right))
    if not keys:
        return False  # nothing to compare is no agreement
    return all(k in left and k in right and within(left[k], right[k], tolerance) for k in keys)


@dataclass
class Member:
    job_id: str
    status: str  # the replica job's state
    outputs: dict[str, Any] | None  # {"digest": ..., "numbers": {...}} once it completed
    verdict: str = "pending"


@dataclass
class Decision:
    state: str  # "open", "agreed" or "disagreed"
    winner: str | None = None
    agreed: list[str] = field(default_factory=list)
    outliers: list[str] = field(default_factory=list)
    start: int = 0  # more replicas to start now


def decide(
    members: list[Member],
    *,
    quorum: int,
    max_replicas: int,
    compare: str,
    tolerance: float,
    metrics: list[str],
    agreed_reference: dict[str, Any] | None = None,
) -> Decision:
    """What a verified job's replicas add up to. ``agreed_reference`` is the accepted output once
    decided: later replicas are judged against it (agreed or outlier) and nothing more starts."""
    done = [m for m in members if m.status == "completed" and m.outputs is not None]

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return agree(a, b, compare=compare, tolerance=tolerance, metrics=metrics)

    if agreed_reference is not None:
        agreed = [m.job_id for m in done if same(m.outputs or {}, agreed_reference)]
        outliers = [m.job_id for m in done if m.job_id not in agreed]
        return Decision("agreed", agreed=agreed, outliers=outliers)
    best: list[Member] = []
    for pivot in done:  # the largest group agreeing with one replica (the oldest wins a tie)
        group = [m for m in done if same(m.outputs or {}, pivot.outputs or {})]
        if len(group) > len(best):
            best = group
    if len(best) >= quorum:
        agreed = [m.job_id for m in best]
        outliers = [m.job_id for m in done if m.job_id not in agreed]
        return Decision("agreed", winner=best[0].job_id, agreed=agreed, outliers=outliers)
    open_ = sum(1 for m in members if m.status in ("pending", "running"))
    short = quorum - len(best) - open_
    if short <= 0:
        return Decision("open")
    room = max_replicas - len(members)
    if room >= short:
        return Decision("open", start=short)
    if open_ == 0:
        # No quorum is possible any more: every finished replica is an outlier of nothing.
        return Decision("disagreed")
    return Decision("open", start=max(0, room))


# ---------------------------------------------------------------- submission


def replica_spec(spec: JobOptions, parent_id: str, label: str = REPLICA_LABEL) -> JobOptions:
    """The spec a replica runs: the job's own, without verification, labelled with its parent."""
    labels = dict(spec.labels)
    labels[label] = parent_id
    return spec.model_copy(update={"verification": None, "labels": labels, "idempotency_key": None})


def hold(job: dict[str, Any], spec: JobOptions) -> None:
    """A verified job's row as submitted: running (its replicas are its work), never claimable."""
    check = spec.verification
    assert check is not None
    job["status"] = "running"
    job["started_at"] = job["created_at"]
    job["progress_message"] = f"verifying: {check.replicas} replicas queued, {check.needed} must agree"


def start_replicas(
    session: Session, job_id: str, tenant_id: str, job_type: JobType, spec: JobOptions
) -> None:
    """Create a just-submitted verified job's verification record and first replicas."""
    from nexa_gateway.services import jobs as jobsvc

    check = spec.verification
    assert check is not None
    session.add(
        JobVerification(
            job_id=job_id,
            tenant_id=tenant_id,
            purpose="requested",
            compare=check.compare,
            tolerance=check.tolerance,
            metrics=list(check.checker.metrics) if check.checker else [],
            quorum=check.needed,
            max_replicas=check.most,
            distinct_owners=check.distinct_owners,
            state="open",
        )
    )
    child_spec = replica_spec(spec, job_id)
    children = [jobsvc.rows_for(tenant_id, job_type, child_spec) for _ in range(check.replicas)]
    jobsvc.insert_rows(session, children, [child_spec] * len(children))
    session.add_all(
        JobReplica(job_id=job["id"], parent_id=job_id, index=i) for i, (job, _, _) in enumerate(children)
    )
    session.flush()


# ---------------------------------------------------------------- claims


Identity = tuple[str, str | None, str | None, NodeRecord | None]


def node_identity(session: Session, worker: Worker) -> Identity:
    """(node key, owner key, owner tenant, record): the node's public key (its worker id without one),
    the node token it registered with, the tenant that owns it (None for the platform's nodes) and its
    standing, in one query (the claim asks for all of them on every poll)."""
    key = func.coalesce(WorkerKey.public_key, Worker.id)
    row = session.execute(
        select(key, WorkerOwner.node_token_id, WorkerOwner.tenant_id, NodeRecord)
        .select_from(Worker)
        .outerjoin(WorkerKey, WorkerKey.worker_id == Worker.id)
        .outerjoin(WorkerOwner, WorkerOwner.worker_id == Worker.id)
        .outerjoin(NodeRecord, NodeRecord.node_key == key)
        .where(Worker.id == worker.id)
    ).first()
    if row is None:
        return worker.id, None, None, None
    return str(row[0]), row[1], row[2], row[3]


NODE_KEY_PARAM, OWNER_KEY_PARAM = "mesh_node_key", "mesh_owner_key"
_CLAIM_FILTERS: dict[tuple[bool, bool], Any] = {}


def claim_filter(owner_known: bool, owned: bool) -> Any:
    """The claim query's condition: not a replica of a job this node (or, where the job asks for
    distinct owners, its owner) already holds another replica of; and for a tenant's own node
    (``owned``), no spot check: the platform checks nodes with its own.

    Built once per shape and bound at execution (``claim_params``): building it costs more than
    running it, and the claim is the queue's hottest query.
    """
    found = _CLAIM_FILTERS.get((owner_known, owned))
    if found is None:
        found = _CLAIM_FILTERS[(owner_known, owned)] = _build_claim_filter(owner_known, owned)
    return found


def claim_params(node_key: str, owner_key: str | None) -> dict[str, Any]:
    return {NODE_KEY_PARAM: node_key, OWNER_KEY_PARAM: owner_key}


def _build_claim_filter(owner_known: bool, owned: bool) -> Any:
    mine, sibling = aliased(JobReplica), aliased(JobReplica)
    verification = aliased(JobVerification)
    # Not its own row: a node whose lease on a replica ran out may take that replica again.
    same_node = and_(sibling.node_key == bindparam(NODE_KEY_PARAM), sibling.job_id != mine.job_id)
    if owner_known:
        same_owner = and_(
            sibling.owner_key == bindparam(OWNER_KEY_PARAM),
            exists().where(verification.job_id == mine.parent_id, verification.distinct_owners.is_(True)),
        )
        same_node = or_(same_node, same_owner)
    condition = ~exists().where(mine.job_id == Job.id, sibling.parent_id == mine.parent_id, same_node)
    if owned:
        spot, checked = aliased(JobReplica), aliased(JobVerification)
        condition = and_(
            condition,
            ~exists().where(
                spot.job_id == Job.id, checked.job_id == spot.parent_id, checked.purpose == "spot_check"
            ),
        )
    return condition


def on_claimed(session: Session, job_id: str, worker: Worker, identity: Identity) -> bool:
    """Tie a replica to the node that claimed it; False (the claim must be undone) when another
    replica of the same job reached this node first."""
    node_key, owner_key = identity[0], identity[1]
    replica = session.get(JobReplica, job_id)
    if replica is None:
        return True
    taken = session.scalar(
        select(JobReplica.job_id).where(
            JobReplica.parent_id == replica.parent_id,
            JobReplica.node_key == node_key,
            JobReplica.job_id != job_id,
        )
    )
    if taken is not None:
        return False
    try:
        with session.begin_nested():  # the unique (parent, node) key refuses a concurrent twin here
            replica.worker_id, replica.node_key, replica.owner_key = worker.id, node_key, owner_key
            session.flush()
    except IntegrityError:
        return False
    return True


# ---------------------------------------------------------------- outcomes


def outputs_of(manifests: list[ArtifactManifest], result: dict[str, Any] | None) -> dict[str, Any]:
    return {"digest": digest(manifests, result), "numbers": numbers(manifests, result)}


def replica_completed(
    session: Session,
    row: Job,
    manifests: list[ArtifactManifest],
    credit: reputation.CreditPolicy,
) -> None:
    """A replica's attempt completed: record what its outputs hash to, then weigh the replicas."""
    replica = session.get(JobReplica, row.id)
    if replica is None:
        return
    replica.outputs = outputs_of(manifests, row.result)
    replica.digest = replica.outputs["digest"]
    if row.attempt_started_at is not None and row.finished_at is not None:
        replica.seconds = max(0.0, (row.finished_at - row.attempt_started_at).total_seconds())
    session.flush()
    _weigh(session, replica.parent_id, credit)


def replica_ended(session: Session, row: Job, credit: reputation.CreditPolicy | None) -> None:
    """A replica ended without a result (failed or cancelled): weigh what is left."""
    replica = session.get(JobReplica, row.id)
    if replica is None or replica.job_id == replica.parent_id:
        return
    replica.verdict = "cancelled" if row.status == "cancelled" else "failed"
    session.flush()
    _weigh(session, replica.parent_id, credit)


def _statuses(session: Session, replicas: list[JobReplica]) -> dict[str, str]:
    """Each replica job's state, in one query."""
    rows = session.execute(select(Job.id, Job.status).where(Job.id.in_([r.job_id for r in replicas])))
    return {str(job_id): str(state) for job_id, state in rows}


def _weigh(session: Session, parent_id: str, credit: reputation.CreditPolicy | None) -> None:
    check = session.get(JobVerification, parent_id, with_for_update=True)
    if check is None or check.state in ("disagreed", "cancelled"):
        return
    replicas = list(
        session.scalars(
            select(JobReplica).where(JobReplica.parent_id == parent_id).order_by(JobReplica.index)
        )
    )
    statuses = _statuses(session, replicas)
    members = [
        Member(r.job_id, str(statuses.get(r.job_id, "failed")), r.outputs, r.verdict) for r in replicas
    ]
    reference = None
    if check.state == "agreed":
        winner = next((r for r in replicas if r.job_id == check.winner_job_id), None)
        reference = winner.outputs if winner is not None else None
    decision = decide(
        members,
        quorum=check.quorum,
        max_replicas=check.max_replicas,
        compare=check.compare,
        tolerance=check.tolerance,
        metrics=list(check.metrics or []),
        agreed_reference=reference,
    )
    now = utcnow()
    by_id = {r.job_id: r for r in replicas}
    judged: list[tuple[JobReplica, str]] = []
    for job_id in decision.agreed:
        if by_id[job_id].verdict == "pending":
            judged.append((by_id[job_id], "agreed"))
    for job_id in decision.outliers:
        if by_id[job_id].verdict == "pending":
            judged.append((by_id[job_id], "outlier"))
    for replica, verdict in judged:
        replica.verdict, replica.judged_at = verdict, now
    if decision.state == "agreed" and check.state == "open":
        _accept(session, check, by_id[decision.winner or decision.agreed[0]], decision, now)
    elif decision.state == "disagreed":
        _give_up(session, check, replicas, now)
    for k in range(decision.start):
        _start_replica(session, check, len(replicas) + k)
    session.flush()
    for replica, verdict in judged:
        # Only a completion judges replicas (a failure adds no output), and completions carry the policy.
        if credit is not None:
            reputation.replica_judged(session, replica, verdict, check, credit)


def _accept(
    session: Session, check: JobVerification, winner: JobReplica, decision: Decision, now: Any
) -> None:
    check.state, check.agreed_digest, check.winner_job_id, check.decided_at = (
        "agreed",
        winner.digest,
        winner.job_id,
        now,
    )
    text = f"{len(decision.agreed)} replicas agree ({', '.join(decision.agreed)})" + (
        f"; outliers: {', '.join(decision.outliers)}" if decision.outliers else ""
    )
    if check.purpose == "spot_check":
        original = session.get(JobReplica, check.job_id)
        if original is not None and original.verdict == "outlier":
            text = f"a spot check disagrees with this job's result: {text}"
        add_event(session, check.job_id, "spot_check", text, 0)
        return
    source = session.get(Job, winner.job_id)
    if source is None:
        return
    session.execute(
        update(Job)
        .where(Job.id == check.job_id, Job.status == "running")
        .values(
            status="completed",
            result=source.result,
            artifacts_uri=source.artifacts_uri,
            progress=1.0,
            progress_message=f"verified: {len(decision.agreed)} replicas agree (quorum {check.quorum})",
            finished_at=now,
            updated_at=now,
        )
    )
    add_event(session, check.job_id, "verified", text, 0)
    _stop_pending(session, check.job_id, "the quorum agreed without this replica")


def _give_up(
    session: Session, check: JobVerification, replicas: list[JobReplica], now: Any, why: str = ""
) -> None:
    check.state, check.decided_at = "disagreed", now
    digests = sorted({r.digest[:12] for r in replicas if r.digest})
    message = (
        f"no {check.quorum} of {len(replicas)} replicas agree{' ' + why if why else ''} "
        f"(distinct outputs: {', '.join(digests) or 'none completed'})"
    )
    if check.purpose == "spot_check":
        add_event(session, check.job_id, "spot_check", f"the spot check was inconclusive: {message}", 0)
        return
    session.execute(
        update(Job)
        .where(Job.id == check.job_id, Job.status == "running")
        .values(
            status="failed",
            error_code=QUORUM_NOT_REACHED,
            error_message=message,
            error_retryable=False,
            progress_message=f"failed: {QUORUM_NOT_REACHED}",
            finished_at=now,
            updated_at=now,
        )
    )
    add_event(session, check.job_id, "failed", f"{QUORUM_NOT_REACHED}: {message}", 0)


def _start_replica(session: Session, check: JobVerification, index: int) -> None:
    from nexa_gateway.services import jobs as jobsvc

    source = session.get(Job, check.job_id)
    if source is None:
        return
    label = REPLICA_LABEL if check.purpose == "requested" else SPOT_CHECK_LABEL
    child_spec = replica_spec(jobsvc.spec_model(source.job_type, source.spec), check.job_id, label)
    child, event, labels = jobsvc.rows_for(source.tenant_id, JobType(source.job_type), child_spec)
    jobsvc.insert_rows(session, [(child, event, labels)], [child_spec])
    session.add(JobReplica(job_id=child["id"], parent_id=check.job_id, index=index))
    add_event(
        session,
        check.job_id,
        "replica_started",
        f"replica {index + 1} ({child['id']}) started: the replicas so far cannot reach the quorum",
        0,
    )


def _stop_pending(session: Session, parent_id: str, why: str) -> None:
    """Cancel replicas no node took yet; running ones finish and are judged against the result."""
    pending = list(
        session.scalars(
            select(Job.id)
            .join(JobReplica, JobReplica.job_id == Job.id)
            .where(JobReplica.parent_id == parent_id, Job.status == "pending", JobReplica.job_id != parent_id)
        )
    )
    now = utcnow()
    for job_id in pending:
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "pending")
            .values(status="cancelled", finished_at=now, updated_at=now, progress_message="cancelled")
            .returning(Job.id)
        ).scalar_one_or_none()
        if done is not None:
            add_event(session, job_id, "cancelled", why, 0)
            session.execute(update(JobReplica).where(JobReplica.job_id == job_id).values(verdict="cancelled"))


def expire_overdue(session: Session, now: Any, limit: int = 100) -> list[tuple[str, str]]:
    """Fail verified jobs whose replicas reached no quorum within the job's ``timeout_seconds`` (too
    few distinct nodes, say): a verified job never waits forever. Returns the (job, type) it ended."""
    overdue = session.execute(
        select(JobVerification, Job)
        .join(Job, Job.id == JobVerification.job_id)
        .where(
            JobVerification.state == "open", JobVerification.purpose == "requested", Job.status == "running"
        )
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    ended = []
    for check, job in overdue:
        if (now - job.created_at).total_seconds() <= job.timeout_seconds:
            continue
        replicas = list(session.scalars(select(JobReplica).where(JobReplica.parent_id == check.job_id)))
        _give_up(session, check, replicas, now, why=f"within timeout_seconds={job.timeout_seconds}")
        cancel_replicas(session, check.job_id, state="disagreed")
        ended.append((check.job_id, job.job_type))
    return ended


def cancel_replicas(session: Session, parent_id: str, state: str = "cancelled") -> None:
    """The user cancelled a verified job: its replicas stop too (running ones at their next heartbeat)."""
    check = session.get(JobVerification, parent_id)
    if check is None or check.purpose != "requested":
        return
    check.state = state
    _stop_pending(
        session, parent_id, f"the verified job was {'cancelled' if state == 'cancelled' else 'given up'}"
    )
    session.execute(
        update(Job)
        .where(
            Job.id.in_(select(JobReplica.job_id).where(JobReplica.parent_id == parent_id)),
            Job.status == "running",
        )
        .values(cancel_requested=True)
    )


# ---------------------------------------------------------------- spot checks


def maybe_spot_check(
    session: Session,
    row: Job,
    worker_id: str,
    manifests: list[ArtifactManifest],
    *,
    share: float,
    below: float,
    draw: Callable[[], float] = random.random,
) -> bool:
    """After an unverified job completed on a node below the trust level, re-run it elsewhere
    with probability ``share`` (the platform's cost). True when a spot check was started."""
    if share <= 0 or session.get(JobReplica, row.id) is not None:
        return False  # off, or the job is a replica already
    if row.job_type == JobType.deploy.value:
        return False  # a deployment's output is a running server, not files to compare
    if reputation.reputation_of(session, worker_id) >= below or draw() >= share:
        return False
    worker = session.get(Worker, worker_id)
    if worker is None:
        return False
    identity = node_identity(session, worker)
    check = JobVerification(
        job_id=row.id,
        tenant_id=row.tenant_id,
        purpose="spot_check",
        compare="exact",
        tolerance=0.0,
        metrics=[],
        quorum=2,
        max_replicas=3,
        distinct_owners=False,
        state="open",
    )
    session.add(check)
    seconds = None
    if row.attempt_started_at is not None and row.finished_at is not None:
        seconds = max(0.0, (row.finished_at - row.attempt_started_at).total_seconds())
    outputs = outputs_of(manifests, row.result)
    session.add(
        JobReplica(
            job_id=row.id,
            parent_id=row.id,
            index=0,
            worker_id=worker_id,
            node_key=identity[0],
            owner_key=identity[1],
            digest=outputs["digest"],
            outputs=outputs,
            seconds=seconds,
        )
    )
    session.flush()
    _start_replica(session, check, 1)
    add_event(session, row.id, "spot_check", "the platform re-runs this job on another node to check it", 0)
    return True


def is_spot_check(session: Session, job_id: str) -> bool:
    """A replica the platform started to check a node (its usage is the platform's, not the tenant's)."""
    parent = session.scalar(select(JobReplica.parent_id).where(JobReplica.job_id == job_id))
    if parent is None or parent == job_id:
        return False
    return (
        session.scalar(select(JobVerification.purpose).where(JobVerification.job_id == parent))
        == "spot_check"
    )


# ---------------------------------------------------------------- reading


def related(session: Session, job_ids: list[str]) -> list[str]:
    """The verified jobs and sibling replicas a change to these replicas may have moved (to wake
    their status readers)."""
    if not job_ids:
        return []
    parents = select(JobReplica.parent_id).where(JobReplica.job_id.in_(job_ids)).scalar_subquery()
    found = session.scalars(select(JobReplica.job_id).where(JobReplica.parent_id.in_(parents)))
    return sorted(
        {*found, *session.scalars(select(JobReplica.parent_id).where(JobReplica.job_id.in_(job_ids)))}
    )


def status(session: Session, tenant_id: str, job_id: str, see_all_nodes: bool = False) -> VerificationStatus:
    """The replicas of a verified job; a node's id only where the caller may see the node (its tenant's
    own, or every node for a platform admin), as in the registry."""
    get_job_row(session, tenant_id, job_id)  # 404 unless the tenant's
    check = session.get(JobVerification, job_id)
    if check is None:
        raise ApiError(404, "not_found", f"job {job_id} is not verified (no replicas, no spot check)")
    replicas = list(
        session.scalars(select(JobReplica).where(JobReplica.parent_id == job_id).order_by(JobReplica.index))
    )
    statuses = _statuses(session, replicas)
    own = set(
        session.scalars(
            select(WorkerOwner.worker_id).where(
                WorkerOwner.worker_id.in_([r.worker_id for r in replicas if r.worker_id]),
                WorkerOwner.tenant_id == tenant_id,
            )
        )
    )
    return VerificationStatus(
        job_id=job_id,
        state=check.state,
        purpose=check.purpose,
        compare=check.compare,
        quorum=check.quorum,
        max_replicas=check.max_replicas,
        agreed_digest=check.agreed_digest,
        decided_at=check.decided_at,
        replicas=[
            Replica(
                job_id=r.job_id,
                index=r.index,
                status=str(statuses.get(r.job_id, "unknown")),
                worker_id=r.worker_id if see_all_nodes or r.worker_id in own else None,
                digest=r.digest,
                verdict=r.verdict,
            )
            for r in replicas
        ],
    )
