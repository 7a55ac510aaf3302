"""Deleting artifacts, datasets and jobs, with what depends on them shown first.

Storage is billed (``services.storagemeter``), so tenants can delete. What would break decides
whether a deletion goes ahead:

* **Another artifact of the tenant made from it** (its manifest names it as an input, indexed in
  ``artifact_inputs`` when it was registered): refused with 409 ``artifact_in_use`` unless
  ``force`` is given. Forcing deletes it anyway and leaves that artifact with an input that is gone.
* **A job of the tenant not yet finished whose spec names it**, or **a deployment still serving
  it** (or the deployment itself while it serves): refused even with ``force``. The job would
  fail on a missing input and the endpoint would lose its model; cancel or undeploy first.

A deletion removes the registry row (the storage meter stops counting it from the next hour),
chains an ``artifact_deleted`` entry into the tenant's ledger stream, and removes the files from
the store, all before the caller commits. If the store fails the transaction rolls back and the
row stays: deleting again finishes the job, because a store delete of what is gone is no error.

Deleting a finished job (standalone only: in cluster mode jobs are NexaJobs the gateway does not
own) also removes its output artifacts under the same rules, its log lines, events and labels.
Its bill does not change: a ``UsageSubject`` row keeps naming the job's type for the usage
recorded against it, which stays.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse

from nexa.contracts import ErrorCode, JobState
from nexa.contracts.artifacts import ArtifactDependent, ArtifactDependents, DeletedArtifact, Deletion
from nexa.contracts.jobs import TERMINAL_STATES
from nexa.contracts.workers import UsageRecord
from nexa_gateway.db import (
    Artifact,
    ArtifactInput,
    Job,
    JobEvent,
    JobLabel,
    JobLog,
    JobRequirement,
    JobStop,
    PlatformMeta,
    Usage,
    UsageSubject,
    utcnow,
)
from nexa_gateway.errors import ApiError, error_body
from nexa_gateway.services import ledger
from nexa_gateway.services.artifacts import get_artifact_row, input_ids
from nexa_gateway.services.deploymeter import started_at
from nexa_gateway.services.queue import record_usage
from nexa_store.base import ArtifactError, ArtifactStore, StoreUnavailable
from nexa_store.serving import deployment_status, derived_id, stopped_at

if TYPE_CHECKING:
    from nexa_gateway.state import AppState

log = logging.getLogger("nexa.gateway.deletion")

Reason = Literal["requested", "retention", "job_deleted"]
UNFINISHED = (JobState.pending.value, JobState.running.value)
# Artifacts registered before the input index existed are checked by reading their manifests.
INDEX_SINCE_KEY = "artifact_inputs_since"
NAMED_IN_MESSAGE = 10  # dependents named in a 409's message; the body's ``errors`` lists them all
DEPLOYMENT_HOURS = "deployment_hours"  # deploymeter's kind
_LIST_PAGE = 500


# ---------------------------------------------------------------- what depends on an artifact


@dataclass
class UnfinishedJobs:
    """A tenant's pending and running jobs and their specs, read once (lazily) per deletion or tick."""

    load: Callable[[], list[tuple[str, str, str, str]]]  # (job id, status, job type, spec as JSON)
    _jobs: list[tuple[str, str, str, str]] | None = field(default=None, init=False)

    def naming(self, artifact_id: str) -> list[tuple[str, str, str]]:
        """(job id, status, job type) of every unfinished job whose spec names ``artifact_id``."""
        if self._jobs is None:
            self._jobs = self.load()
        # Ids are 128 random bits: appearing in the spec's JSON is naming it, in any field.
        return [(j, status, kind) for j, status, kind, spec in self._jobs if artifact_id in spec]


def unfinished_jobs(session: Session, state: AppState, tenant_id: str) -> UnfinishedJobs:
    """The tenant's unfinished jobs from wherever jobs live: the SQL queue, or the cluster's NexaJobs."""
    if state.settings.backend == "sql":

        def from_sql() -> list[tuple[str, str, str, str]]:
            rows = session.execute(
                select(Job.id, Job.status, Job.job_type, Job.spec).where(
                    Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED)
                )
            ).all()
            return [(j, status, kind, json.dumps(spec)) for j, status, kind, spec in rows]

        return UnfinishedJobs(from_sql)

    def from_backend() -> list[tuple[str, str, str, str]]:
        found = []
        for status in (JobState.pending, JobState.running):
            cursor: str | None = None
            while True:
                page, cursor = state.backend.list_jobs(
                    tenant_id, job_type=None, status=status, labels={}, limit=_LIST_PAGE, cursor=cursor
                )
                found += [(j.job_id, j.status.value, j.job_type.value, json.dumps(j.spec)) for j in page]
                if not cursor:
                    break
        return found

    return UnfinishedJobs(from_backend)


def index_since(session: Session) -> datetime:
    """When artifact inputs began to be indexed; artifacts registered before then have no rows."""
    row = session.get(PlatformMeta, INDEX_SINCE_KEY)
    if row is None:
        return datetime.now(UTC)  # not marked yet (a gateway older than the index wrote everything)
    return datetime.fromisoformat(row.value)


def mark_index_start(session: Session) -> None:
    """Record, once per installation, from when on ``artifact_inputs`` is complete (gateway start)."""
    if session.get(PlatformMeta, INDEX_SINCE_KEY) is not None:
        return
    # A database without artifacts has nothing unindexed: every artifact to come is indexed.
    empty = session.scalar(select(Artifact.id).limit(1)) is None
    since = datetime(1970, 1, 1, tzinfo=UTC) if empty else utcnow()
    try:
        with session.begin_nested():
            session.add(PlatformMeta(key=INDEX_SINCE_KEY, value=since.isoformat()))
            session.flush()
    except IntegrityError:
        pass  # another replica marked it first


def _made_from(session: Session, store: ArtifactStore, row: Artifact) -> list[Artifact]:
    """The tenant's artifacts whose manifests name ``row`` as an input."""
    indexed = list(
        session.scalars(
            select(Artifact)
            .join(ArtifactInput, ArtifactInput.artifact_id == Artifact.id)
            .where(ArtifactInput.tenant_id == row.tenant_id, ArtifactInput.input_id == row.id)
            .where(Artifact.tenant_id == row.tenant_id)
            .order_by(Artifact.created_at, Artifact.id)
        )
    )
    since = index_since(session)
    if row.created_at >= since:
        return indexed  # whatever was made from it came later, and was indexed
    # Older artifacts: only ones registered after it (inputs exist before what is made of them), by
    # a job (uploads have no inputs), before the index, can name it; their manifests say.
    seen = {a.id for a in indexed}
    candidates = session.scalars(
        select(Artifact)
        .where(Artifact.tenant_id == row.tenant_id, Artifact.id != row.id)
        .where(Artifact.job_id.is_not(None), Artifact.kind != "log")
        .where(Artifact.created_at >= row.created_at, Artifact.created_at < since)
        .order_by(Artifact.created_at, Artifact.id)
    )
    for candidate in candidates:
        if candidate.id in seen:
            continue
        try:
            manifest = store.read_manifest(candidate.id, verify=False)
        except StoreUnavailable:
            raise
        except ArtifactError as exc:
            log.warning("artifact %s: manifest unreadable while finding dependents: %s", candidate.id, exc)
            continue
        if row.id in input_ids(manifest):
            indexed.append(candidate)
    return indexed


def _serving(store: ArtifactStore, deployment_id: str) -> str | None:
    """The deployment's status while its process may still serve (running, stopping), else None."""
    status = deployment_status(store, deployment_id)
    return None if status == "stopped" else status


def find_dependents(
    session: Session,
    store: ArtifactStore,
    jobs: UnfinishedJobs,
    row: Artifact,
    *,
    within: Iterable[str] = (),
) -> list[ArtifactDependent]:
    """Everything that needs ``row``, blocking ones first; ``within`` are deleted with it (not counted)."""
    skip = set(within)
    found: list[ArtifactDependent] = []
    if row.kind == "deployment":
        status = _serving(store, row.id)
        if status is not None:
            found.append(
                ArtifactDependent(
                    kind="deployment",
                    id=row.id,
                    reason=f"the deployment itself is {status}: undeploy it first",
                    blocking=True,
                )
            )
    for job_id, status, job_type in jobs.naming(row.id):
        found.append(
            ArtifactDependent(
                kind="job", id=job_id, reason=f"{status} {job_type} job that reads it", blocking=True
            )
        )
    for other in _made_from(session, store, row):
        if other.id in skip:
            continue
        status = _serving(store, other.id) if other.kind == "deployment" else None
        if status is not None:
            found.append(
                ArtifactDependent(
                    kind="deployment", id=other.id, reason=f"deployment serving it ({status})", blocking=True
                )
            )
        else:
            found.append(
                ArtifactDependent(
                    kind="artifact", id=other.id, reason=f"{other.kind} made from it", blocking=False
                )
            )
    return sorted(found, key=lambda d: not d.blocking)


def dependents_of(session: Session, state: AppState, tenant_id: str, artifact_id: str) -> ArtifactDependents:
    """``GET /v1/artifacts/{id}/dependents``: 404 for another tenant's id as for an unknown one."""
    row = get_artifact_row(session, tenant_id, artifact_id)
    found = find_dependents(session, state.store, unfinished_jobs(session, state, tenant_id), row)
    return ArtifactDependents(
        artifact_id=row.id,
        dependents=found,
        deletable=not found,
        deletable_with_force=not any(d.blocking for d in found),
    )


# ---------------------------------------------------------------- refusing


class InUse(ApiError):
    """409 ``artifact_in_use``, its body's ``errors`` listing every dependent."""

    def __init__(self, message: str, dependents: list[tuple[str, ArtifactDependent]]) -> None:
        super().__init__(409, ErrorCode.artifact_in_use.value, message)
        self.dependents = dependents


async def in_use_response(_request: Request, exc: Exception) -> JSONResponse:
    """The 409 answer: the usual error shape, ``errors`` naming each dependent and what it needs."""
    if not isinstance(exc, InUse):  # registered for InUse only
        raise exc
    errors = [
        {
            "field": of,
            "dependent": d.id,
            "kind": d.kind,
            "message": d.reason,
            "blocking": "true" if d.blocking else "false",
        }
        for of, d in exc.dependents
    ]
    return JSONResponse(error_body(exc.type, exc.message, errors=errors), status_code=409)


def _refuse_if_needed(what: str, found: list[tuple[str, ArtifactDependent]], force: bool) -> None:
    blocking = [(of, d) for of, d in found if d.blocking]
    if not blocking and (force or not found):
        return
    shown = blocking if blocking else found
    named = "; ".join(
        f"{d.id} ({d.reason})" + ("" if of == what else f" needs {of}") for of, d in shown[:NAMED_IN_MESSAGE]
    )
    more = f"; and {len(shown) - NAMED_IN_MESSAGE} more" if len(shown) > NAMED_IN_MESSAGE else ""
    if blocking:
        advice = (
            "cancel or wait for those jobs and undeploy those deployments first; force=true does not "
            "delete past them"
        )
    else:
        advice = "delete those first, or pass force=true to delete anyway (they keep an input that is gone)"
    raise InUse(f"{what} is in use: {named}{more}. Not deleted: {advice}", found)


# ---------------------------------------------------------------- deleting


def _meter_deployment(session: Session, store: ArtifactStore, row: Artifact) -> None:
    """Charge a stopped deployment's serving time now if the meter has not yet: its stop record,
    which the meter reads, goes with it."""
    if row.kind != "deployment" or row.job_id is None:
        return
    job = session.get(Job, row.job_id)
    metered = exists().where(Usage.job_id == row.job_id, Usage.kind == DEPLOYMENT_HOURS)
    if job is None or session.scalar(select(metered)):
        return
    ended = stopped_at(store, row.id)
    if ended is None:
        return
    started = started_at(store, row.id, row.created_at)
    hours = round(max(0.0, (ended - started).total_seconds()) / 3600, 6)
    record_usage(
        session, job.tenant_id, job.id, job.attempt, [UsageRecord(kind=DEPLOYMENT_HOURS, amount=hours)]
    )


def _remove(
    session: Session, store: ArtifactStore, row: Artifact, *, reason: Reason, left: list[str]
) -> DeletedArtifact:
    """Delete one artifact: its row and index rows, a ledger entry, then its files (caller commits)."""
    _meter_deployment(session, store, row)
    deleted = DeletedArtifact.model_validate(
        {"artifact_id": row.id, "kind": row.kind, "size_bytes": row.size_bytes}
    )
    session.execute(
        delete(ArtifactInput).where(
            or_(ArtifactInput.artifact_id == row.id, ArtifactInput.input_id == row.id)
        )
    )
    session.delete(row)
    ledger.append(
        session,
        ledger.usage_stream(row.tenant_id),
        "artifact_deleted",
        row.id,
        {
            "artifact_id": row.id,
            "kind": row.kind,
            "size_bytes": row.size_bytes,
            "job_id": row.job_id,
            "reason": reason,
            "left_dependents": left,
        },
    )
    session.flush()  # the database says yes before any file goes
    ids = [row.id]
    if row.kind == "deployment":
        ids += [derived_id(row.id, "stop"), derived_id(row.id, "stopped")]  # its undeploy records
    for artifact_id in ids:
        _delete_files(store, artifact_id)
    return deleted


def _delete_files(store: ArtifactStore, artifact_id: str) -> None:
    """Remove an artifact's files; a failure is 503 and rolls the deletion back (deleting again finishes)."""
    try:
        store.delete(artifact_id)
    except StoreUnavailable:
        raise  # answered 503 store_unavailable, its detail in the server's log only
    except ArtifactError as exc:
        log.warning("deleting the files of %s failed: %s", artifact_id, exc)
        raise ApiError(
            503, "store_unavailable", f"the files of {artifact_id} could not be deleted; retry later"
        ) from exc


def delete_artifact(
    session: Session,
    state: AppState,
    tenant_id: str,
    artifact_id: str,
    *,
    force: bool,
    kind: str | None = None,
    reason: Reason = "requested",
    jobs: UnfinishedJobs | None = None,
) -> Deletion:
    """Delete one of the tenant's artifacts (``kind`` given: only one of that kind; else 404)."""
    row = get_artifact_row(session, tenant_id, artifact_id, kind=kind)
    jobs = jobs or unfinished_jobs(session, state, tenant_id)
    found = find_dependents(session, state.store, jobs, row)
    _refuse_if_needed(row.id, [(row.id, d) for d in found], force)
    removed = _remove(session, state.store, row, reason=reason, left=[d.id for d in found])
    return Deletion(deleted=[removed], bytes_freed=removed.size_bytes, left_dependents=found)


def not_supported_in_cluster_mode() -> ApiError:
    return ApiError(
        501,
        ErrorCode.not_supported.value,
        "jobs cannot be deleted in cluster mode: they are NexaJobs, removed with kubectl delete nexajob; "
        "their artifacts can still be deleted with DELETE /v1/artifacts/{id}",
    )


def delete_job(session: Session, state: AppState, tenant_id: str, job_id: str, *, force: bool) -> Deletion:
    """Delete a finished job: its output artifacts (the dependents rule, ``force``), its logs, events
    and labels, and its row. Usage recorded against it stays, priced by a ``UsageSubject``."""
    if state.settings.backend != "sql":
        raise not_supported_in_cluster_mode()
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise ApiError(404, "not_found", f"job {job_id!r} not found")
    if job.status not in TERMINAL_STATES:
        raise ApiError(
            409,
            ErrorCode.job_not_finished.value,
            f"job {job_id} is {job.status}: cancel it, or wait for it to end, before deleting it",
        )
    outputs = list(
        session.scalars(
            select(Artifact)
            .where(Artifact.tenant_id == tenant_id, Artifact.job_id == job.id)
            .order_by(Artifact.created_at.desc(), Artifact.id.desc())
        )
    )
    ours = {a.id for a in outputs}
    jobs = unfinished_jobs(session, state, tenant_id)
    found = [(a.id, d) for a in outputs for d in find_dependents(session, state.store, jobs, a, within=ours)]
    _refuse_if_needed(f"job {job.id}", found, force)
    # Outputs made from other outputs (a deployment from its merged checkpoint) go first.
    deleted = [
        _remove(session, state.store, a, reason="job_deleted", left=[d.id for of, d in found if of == a.id])
        for a in outputs
    ]
    _keep_the_bill(session, job)
    _delete_files(state.store, job.id)  # a distill job's teacher scratch state (distill/<job id>/), if any
    # What only the job's run needed goes with it. Its usage and its estimate (JobEstimate) stay,
    # beside the bill they explain.
    for table in (JobLabel, JobEvent, JobLog, JobStop, JobRequirement):
        session.execute(delete(table).where(table.job_id == job.id))
    session.delete(job)
    ledger.append(
        session,
        ledger.usage_stream(tenant_id),
        "job_deleted",
        job.id,
        {
            "job_id": job.id,
            "job_type": job.job_type,
            "status": job.status,
            "artifacts": [d.artifact_id for d in deleted],
        },
    )
    session.flush()
    return Deletion(
        deleted=deleted,
        bytes_freed=sum(d.size_bytes for d in deleted),
        job_id=job.id,
        left_dependents=[d for _of, d in found],
    )


def _keep_the_bill(session: Session, job: Job) -> None:
    """Name the job for the bill once its row is gone: the summary prices usage by its subject's type."""
    has_usage = session.scalar(select(exists().where(Usage.job_id == job.id)))
    if not has_usage or session.get(UsageSubject, job.id) is not None:
        return
    session.add(
        UsageSubject(id=job.id, tenant_id=job.tenant_id, job_type=job.job_type, gpu_type=job.gpu_type)
    )
