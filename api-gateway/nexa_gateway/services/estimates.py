"""What a job will cost, before it runs: its units from what the platform knows of its inputs.

Only units that follow from the request and the inputs' metadata are estimated:
rows (the dataset's row count), samples, token upper bounds (rows × ``max_tokens``),
prompt tokens from the dataset's size (about four bytes a token). Machine time
(GPU- and CPU-hours) depends on the worker that runs the job and is not guessed:
such a line has no quantity and the estimate says it is incomplete.

Inputs are looked up among the caller's own artifacts only: an id of another
tenant's reads as unknown, so an estimate reveals nothing a submission would not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts import DeploySpec, DistillSpec, EvaluateSpec, GenerateSpec, JobOptions, JobType, TrainSpec
from nexa.contracts.billing import CostEstimate, EstimateLine, PriceBook, shown, to_cents
from nexa.contracts.jobs import AuditSpec
from nexa.ids import is_id
from nexa_gateway.db import Artifact
from nexa_gateway.services.pricebooks import HOURS_PER_MONTH
from nexa_store.base import ArtifactError, ArtifactStore

BYTES_PER_TOKEN = 4


def _own(session: Session, tenant_id: str, ref: str | None, kind: str) -> Artifact | None:
    if not ref:
        return None
    artifact_id = ref.removeprefix("internal://").split("/", 1)[0]
    if not is_id(artifact_id):
        return None
    return session.scalar(
        select(Artifact).where(
            Artifact.id == artifact_id, Artifact.tenant_id == tenant_id, Artifact.kind == kind
        )
    )


def _rows_of(session: Session, tenant_id: str, ref: str | None) -> tuple[int | None, int | None, str]:
    """(rows, bytes, how it is known) of a dataset reference."""
    dataset = _own(session, tenant_id, ref, "dataset")
    if dataset is None:
        return (
            None,
            None,
            f"{ref} is not one of your uploaded or produced datasets: its size is unknown before the run",
        )
    return (
        dataset.num_rows,
        dataset.size_bytes,
        f"{dataset.id}: {dataset.num_rows} rows, {dataset.size_bytes} bytes",
    )


def _holdout(session: Session, store: ArtifactStore, tenant_id: str, checkpoint: str) -> str | None:
    if _own(session, tenant_id, checkpoint, "checkpoint") is None:
        return None
    try:
        holdout = store.read_manifest(checkpoint, verify=False).config.get("holdout_dataset_id")
    except ArtifactError:
        return None
    return str(holdout) if holdout else None


def units(
    session: Session, store: ArtifactStore, tenant_id: str, spec: JobOptions
) -> list[tuple[str, Decimal | None, str]]:
    """(kind, quantity or None, basis) for each unit the job meters."""
    if isinstance(spec, AuditSpec):
        rows, _, basis = _rows_of(session, tenant_id, spec.dataset_uri)
        return [("rows", None if rows is None else Decimal(rows), basis)]
    if isinstance(spec, DistillSpec):
        rows, size, basis = _rows_of(session, tenant_id, spec.dataset_id)
        return [
            (
                "prompt_tokens",
                None if size is None else Decimal(size // BYTES_PER_TOKEN),
                f"about 1 token per {BYTES_PER_TOKEN} bytes of {basis}",
            ),
            (
                "completion_tokens",
                None if rows is None else Decimal(rows * spec.max_tokens),
                f"at most max_tokens {spec.max_tokens} per row of {basis}",
            ),
        ]
    if isinstance(spec, GenerateSpec):
        return [
            ("prompt_tokens", None, "the prompts are written from the domain during the run"),
            (
                "completion_tokens",
                Decimal(spec.num_samples * spec.max_tokens),
                f"at most max_tokens {spec.max_tokens} for each of {spec.num_samples} samples",
            ),
        ]
    if isinstance(spec, EvaluateSpec):
        if spec.benchmark:
            return [
                ("samples", None, "a named benchmark's size is known to lm-evaluation-harness on the worker")
            ]
        ref = spec.dataset_id or _holdout(session, store, tenant_id, spec.checkpoint_id)
        rows, _, basis = (
            _rows_of(session, tenant_id, ref)
            if ref
            else (None, None, "the checkpoint has no held-out split of yours")
        )
        if rows is not None and spec.max_samples:
            rows, basis = min(rows, spec.max_samples), f"{basis}, max_samples {spec.max_samples}"
        return [("samples", None if rows is None else Decimal(rows), basis)]
    if isinstance(spec, DeploySpec):
        return [("deployment_hours", HOURS_PER_MONTH, "one month of serving (charged by the second it runs)")]
    if isinstance(spec, TrainSpec):
        return [
            (
                "gpu_hours" if spec.resources.gpus else "cpu_hours",
                None,
                "machine time depends on the worker that runs it",
            ),
        ]
    return []


def estimate(
    session: Session,
    store: ArtifactStore,
    book: PriceBook,
    tenant_id: str,
    job_type: JobType,
    spec: JobOptions,
) -> CostEstimate:
    """The expected charge of ``spec``, priced by the version of ``book`` in force now."""
    version = book.version_at(datetime.now(UTC))
    gpu_type = spec.resources.gpu_type
    lines, total, cents, complete = [], Decimal(0), 0, True
    for kind, quantity, basis in units(session, store, tenant_id, spec):
        rate = version.rate_for(kind, job_type.value, gpu_type) if version is not None else None
        if rate is None:
            lines.append(
                EstimateLine(kind=kind, quantity=quantity, amount=Decimal(0), basis=f"{basis}; not priced")
            )
            continue
        if quantity is None:
            complete = False
            lines.append(EstimateLine(kind=kind, basis=basis))
            continue
        amount = quantity / rate.per * rate.price
        total += amount
        cents += to_cents(amount)
        lines.append(EstimateLine(kind=kind, quantity=quantity, amount=shown(amount), basis=basis))
    return CostEstimate(
        job_type=job_type.value,
        price_book=book.name,
        currency=book.currency,
        total=shown(total),
        total_cents=cents,
        complete=complete,
        lines=lines,
    )
