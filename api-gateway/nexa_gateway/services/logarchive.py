"""Finished jobs' logs as files in the artifact store (the SPEC's ``logs_uri``).

While a job runs, its lines live in the database and stream over SSE. Once it
has ended, the gateway writes them to a ``log_…`` artifact holding ``job.log``,
owned by the job's tenant and signed like the gateway's other writes, so the
log stays readable (and downloadable) as a file after the worker is gone, the
same way in both store kinds. The artifact's id is derived from the job's, so
archiving twice (a retry, two gateway replicas) finds the same artifact.

A background task works through finished jobs in order of ``finished_at``, from
a cursor kept in ``platform_meta``: each tick is a bounded query, however many
jobs the database holds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nexa.contracts.jobs import TERMINAL_STATES
from nexa.ids import derived_id
from nexa_gateway.db import Artifact, Job, JobLog, PlatformMeta, utcnow
from nexa_store.base import ArtifactStore

log = logging.getLogger(__name__)

LOG_FILE = "job.log"
CURSOR_KEY = "log_archive_cursor"
BATCH = 50
GRACE_SECONDS = 5.0


def log_artifact_id(job_id: str) -> str:
    """The id of ``job_id``'s log artifact (the same on every gateway, every time)."""
    return derived_id("log", job_id, LOG_FILE)


def logs_file_uri(job_id: str) -> str:
    """``internal://log_…/job.log``: downloadable at ``/v1/artifacts/log_…/files/job.log``."""
    return f"internal://{log_artifact_id(job_id)}/{LOG_FILE}"


def archived(session: Session, job_ids: list[str]) -> set[str]:
    """Which of ``job_ids`` have their log archived already."""
    if not job_ids:
        return set()
    by_artifact = {log_artifact_id(j): j for j in job_ids}
    found = session.execute(select(Artifact.id).where(Artifact.id.in_(list(by_artifact)))).scalars()
    return {by_artifact[a] for a in found}


def render(rows: list[JobLog]) -> bytes:
    """One line per log line: ``<UTC time> [attempt <n>] <text>``."""
    return "".join(f"{r.at.isoformat()} [attempt {r.attempt}] {r.line}\n" for r in rows).encode()


def archive_job(session: Session, store: ArtifactStore, job: Job) -> str:
    """Write ``job``'s log to the store and register it for its tenant (once); returns the artifact id."""
    artifact_id = log_artifact_id(job.id)
    if session.get(Artifact, artifact_id) is not None:
        return artifact_id
    rows = list(session.execute(select(JobLog).where(JobLog.job_id == job.id).order_by(JobLog.seq)).scalars())
    data = render(rows)
    if not store.exists(artifact_id):
        with store.begin("log", artifact_id) as writer:
            (writer.path / LOG_FILE).write_bytes(data)
            writer.commit(
                job_id=job.id,
                attempt=job.attempt,
                tenant_id=job.tenant_id,
                metrics={"lines": len(rows), "status": job.status},
            )
    session.add(
        Artifact(
            id=artifact_id,
            tenant_id=job.tenant_id,
            kind="log",
            uri=store.uri(artifact_id),
            name=f"log of {job.id}",
            job_id=job.id,
            size_bytes=len(data),
        )
    )
    return artifact_id


@dataclass
class Cursor:
    finished_at: datetime | None = None
    job_id: str = ""


def _read_cursor(session: Session) -> Cursor:
    row = session.get(PlatformMeta, CURSOR_KEY)
    if row is None:
        return Cursor()
    doc = json.loads(row.value)
    return Cursor(datetime.fromisoformat(doc["finished_at"]), str(doc["job_id"]))


def _write_cursor(session: Session, cursor: Cursor) -> None:
    assert cursor.finished_at is not None
    value = json.dumps({"finished_at": cursor.finished_at.isoformat(), "job_id": cursor.job_id})
    row = session.get(PlatformMeta, CURSOR_KEY)
    if row is None:
        session.add(PlatformMeta(key=CURSOR_KEY, value=value))
    else:
        row.value = value


def archive_pending(
    session: Session, store: ArtifactStore, *, batch: int = BATCH, grace_seconds: float = GRACE_SECONDS
) -> list[str]:
    """Archive the next ``batch`` jobs that ended at least ``grace_seconds`` ago; returns their ids.

    The grace lets a cancelled job's worker push its last lines before the file is written.
    """
    cursor = _read_cursor(session)
    settled = utcnow() - timedelta(seconds=grace_seconds)
    query = select(Job).where(
        Job.status.in_([s.value for s in TERMINAL_STATES]),
        Job.finished_at.is_not(None),
        Job.finished_at <= settled,
    )
    if cursor.finished_at is not None:
        query = query.where(
            or_(
                Job.finished_at > cursor.finished_at,
                and_(Job.finished_at == cursor.finished_at, Job.id > cursor.job_id),
            )
        )
    jobs = list(session.execute(query.order_by(Job.finished_at, Job.id).limit(batch)).scalars())
    done: list[str] = []
    for job in jobs:
        try:
            with session.begin_nested():
                archive_job(session, store, job)
        except IntegrityError:
            pass  # another gateway registered it between our look and our insert: archived all the same
        done.append(job.id)
        assert job.finished_at is not None
        _write_cursor(session, Cursor(job.finished_at, job.id))
    return done
