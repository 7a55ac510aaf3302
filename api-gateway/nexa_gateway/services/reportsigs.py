"""Signed reports from nodes: a node that registered an Ed25519 key signs every final report with it.

The gateway checks the DSSE envelope against the report it received (``nexa_store.envelopes``)
before it looks at the report at all. A report that fails is refused with 422
``report_signature_invalid``. The refusal is recorded: an event on the job's timeline, naming the
node, and the metric ``nexa_report_signatures_refused_total``. The attempt is left as it was, so its
lease runs out and the job goes to another attempt. A node that registered no key is let through,
unless the platform requires signatures (``NEXA_REQUIRE_NODE_SIGNATURES``), in which case such a
node is refused at registration.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts import FailReport, ResultReport
from nexa.contracts.workers import LogLines
from nexa_gateway.db import Job, Worker, WorkerKey
from nexa_gateway.errors import ApiError
from nexa_gateway.services.jobs import add_event
from nexa_store.envelopes import EnvelopeError, ReportKind, verify_report

log = logging.getLogger("nexa.gateway.reportsigs")

REFUSED = "report_signature_invalid"


def public_key_of(session: Session, worker_id: str) -> str | None:
    """The node's registered key (read once per session: a request asks several times)."""
    known: dict[str, str | None] = session.info.setdefault("worker_public_keys", {})
    if worker_id not in known:
        known[worker_id] = session.scalar(
            select(WorkerKey.public_key).where(WorkerKey.worker_id == worker_id)
        )
    return known[worker_id]


def check(
    session: Session,
    worker: Worker,
    job_id: str,
    kind: ReportKind,
    report: ResultReport | FailReport | LogLines,
) -> None:
    """Raise 422 ``report_signature_invalid`` (recorded on the job) unless the node signed this report."""
    key = public_key_of(session, worker.id)
    if key is None:
        return
    try:
        verify_report(report.envelope, key, kind, job_id, report.attempt, worker.id, report)
        if isinstance(report, LogLines) and report.seq is None:
            # Unnumbered, a signed batch could be sent again and appended twice.
            raise EnvelopeError("a signed log batch must carry its seq")
        if isinstance(report, ResultReport):
            unnamed = [a for a in report.artifacts if a not in report.manifests]
            if unnamed:
                raise EnvelopeError(
                    f"the signed result does not name the manifest of {', '.join(unnamed[:5])}"
                )
    except EnvelopeError as exc:
        log.warning("job %s: %s report from worker %s refused: %s", job_id, kind, worker.id, exc)
        held = session.scalar(select(Job.id).where(Job.id == job_id, Job.worker_id == worker.id))
        if held is not None:
            add_event(
                session,
                job_id,
                "report_refused",
                f"a {kind} report from worker {worker.name} ({worker.id}) was refused: {exc}",
                report.attempt,
            )
            session.commit()  # the record stays although the report is refused
        raise ApiError(422, REFUSED, f"the {kind} report is refused: {exc}", field="envelope") from exc
