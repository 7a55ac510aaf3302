"""What a job will cost, before it runs: its units from what the platform knows of its inputs.

Only units that follow from the request and the inputs' metadata are estimated:
rows (the dataset's row count), samples, token upper bounds (rows × ``max_tokens``),
prompt tokens from the dataset's size (about four bytes a token), and a training
job's machine time (``services.machinetime``: from a measured earlier run of the same
model, else from its parameters, tokens and the device's throughput). A unit that
cannot be known has no quantity, and the estimate says it is incomplete.

Inputs are looked up among the caller's own artifacts only: an id of another
tenant's reads as unknown, so an estimate reveals nothing a submission would not.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from nexa.contracts import DeploySpec, DistillSpec, EvaluateSpec, GenerateSpec, JobOptions, JobType, TrainSpec
from nexa.contracts.billing import CostEstimate, EstimateLine, PriceBook, shown, to_cents
from nexa.contracts.catalog import CatalogEntry
from nexa.contracts.jobs import AuditSpec
from nexa.ids import is_id
from nexa_gateway.db import Artifact, Job, Worker, WorkerOwner, WorkerStatus
from nexa_gateway.services import machinetime
from nexa_gateway.services.pricebooks import HOURS_PER_MONTH
from nexa_store.access import Access, AccessDenied, local_path
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


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
MEASURED_LOOKBACK = 50  # completed training jobs searched for a measured rate


def _weights_params(directory: Path) -> int | None:
    """Parameters of a model directory, from its safetensors bytes and its config's dtype."""
    try:
        # Files are sized only where they are: a link could point outside the tenant's grants.
        size = sum(f.lstat().st_size for f in directory.glob("*.safetensors") if not f.is_symlink())
        if (directory / "config.json").is_symlink():
            return None
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    dtype = config.get("torch_dtype") if isinstance(config, dict) else None
    return size // DTYPE_BYTES.get(str(dtype), 4) if size else None


def _model_params(
    session: Session,
    tenant_id: str,
    model: str | None,
    catalog: Mapping[str, CatalogEntry],
    access: Access | None,
) -> tuple[int | None, str]:
    """(parameters, how they are known) of a training job's base model."""
    if not model:
        return None, "no base model is named"
    if access is not None and (model.startswith("/") or model.startswith("file://")):
        # A model directory on this server: read only where the tenant may read (its grants).
        try:
            real = local_path(access, model.removeprefix("file://"), "model")
        except AccessDenied:
            return None, f"the size of {model} is unknown before the run"
        counted = _weights_params(real)
        if counted:
            return counted, f"{model}: its weight files hold {counted:,}"
    checkpoint = _own(session, tenant_id, model, "checkpoint")
    if checkpoint is not None:
        # Training saves float32 weights; tokenizer files are a rounding error beside them.
        return (
            checkpoint.size_bytes // 4,
            f"{checkpoint.id}: {checkpoint.size_bytes:,} bytes of float32 weights",
        )
    entry = catalog.get(model)
    name = model
    if entry is not None and entry.source:
        if Path(entry.source).is_absolute():
            counted = _weights_params(Path(entry.source))
            if counted:
                return counted, f"{model}: the catalog's model directory holds {counted:,}"
        name = entry.source
    params = machinetime.params_from_name(name)
    if params is None:
        return None, f"the size of {model} is unknown before the run"
    return params, f"as its name {name} says"


def _planned(session: Session, tenant_id: str, spec: TrainSpec) -> tuple[int | None, str]:
    _, size, basis = _rows_of(session, tenant_id, spec.dataset_id)
    if size is None:
        return None, basis
    hp = spec.hyperparameters
    tokens = machinetime.planned_tokens(
        size,
        epochs=spec.epochs,
        holdout_fraction=spec.holdout_fraction,
        max_steps=spec.max_steps,
        batch_size=hp.batch_size,
        grad_accum=hp.gradient_accumulation_steps,
        max_seq_len=hp.max_seq_len,
    )
    return tokens, f"about 1 token per {machinetime.BYTES_PER_TOKEN} bytes of {basis}, {spec.epochs} epochs"


def _same_machine(spec: TrainSpec, past: dict[str, Any]) -> bool:
    resources = past.get("resources") or {}
    return (
        past.get("model") == spec.model
        and bool(past.get("lora")) == (spec.lora is not None)
        and bool(resources.get("gpus")) == bool(spec.resources.gpus)
        and str(resources.get("gpu_type") or "").upper() == str(spec.resources.gpu_type or "").upper()
    )


def _measured(session: Session, tenant_id: str, spec: TrainSpec, kind: str) -> machinetime.Measured | None:
    """The tenant's newest finished run of the same model on the same kind of machine, as a rate of
    machine-hours per planned token (planned the same way, so the bytes-per-token guess cancels)."""
    done = session.execute(
        select(Job.id, Job.spec, Job.result)
        .where(Job.tenant_id == tenant_id, Job.job_type == "train", Job.status == "completed")
        .order_by(Job.finished_at.desc())
        .limit(MEASURED_LOOKBACK)
    ).all()
    for job_id, past, result in done:
        if not isinstance(past, dict) or not isinstance(result, dict) or not _same_machine(spec, past):
            continue
        hours = result.get(kind)
        try:
            earlier = TrainSpec.model_validate(past)
        except ValueError:
            continue
        tokens, _ = _planned(session, tenant_id, earlier)
        if isinstance(hours, int | float) and hours > 0 and tokens:
            return machinetime.Measured(job_id, tokens, float(hours))
    return None


RECENT = timedelta(minutes=10)  # nodes heard from since then count as the ones that could run it


def _probed_rate(session: Session, tenant_id: str, spec: TrainSpec) -> tuple[float, str] | None:
    """The median measured rate (FLOP/s per GPU, or per CPU thread) of the live nodes that could run
    ``spec``: the platform's and the tenant's own, not drained or revoked, with the GPUs it asks for."""
    rows = session.execute(
        select(Worker.hardware)
        .outerjoin(WorkerOwner, WorkerOwner.worker_id == Worker.id)
        .outerjoin(WorkerStatus, WorkerStatus.worker_id == Worker.id)
        .where(Worker.last_seen_at >= datetime.now(UTC) - RECENT, WorkerStatus.state.is_(None))
        .where(or_(WorkerOwner.tenant_id.is_(None), WorkerOwner.tenant_id == tenant_id))
    ).scalars()
    res = spec.resources
    rates = []
    for hw in rows:
        if not isinstance(hw, dict) or int(hw.get("gpus") or 0) < res.gpus:
            continue
        if res.gpu_type and str(hw.get("gpu_type") or "").upper() != res.gpu_type.upper():
            continue
        if res.gpus and isinstance(hw.get("gpu_tflops"), int | float) and hw["gpu_tflops"] > 0:
            rates.append(float(hw["gpu_tflops"]) * 1e12)
        elif not res.gpus and isinstance(hw.get("cpu_gflops"), int | float) and hw["cpu_gflops"] > 0:
            rates.append(float(hw["cpu_gflops"]) * 1e9 / max(1, int(hw.get("cpu_count") or 1)))
    if not rates:
        return None
    rate = statistics.median(rates)
    unit = f"{rate / 1e12:g} TFLOP/s per GPU" if res.gpus else f"{rate / 1e9:.3g} GFLOP/s per CPU thread"
    return rate, f"{unit}, the median its {len(rates)} connected node(s) measured"


def _train_time(
    session: Session,
    tenant_id: str,
    spec: TrainSpec,
    catalog: Mapping[str, CatalogEntry],
    access: Access | None,
) -> tuple[str, Decimal | None, str]:
    kind = "gpu_hours" if spec.resources.gpus else "cpu_hours"
    tokens, token_basis = _planned(session, tenant_id, spec)
    if tokens is None:
        return kind, None, f"machine time follows from the dataset's size: {token_basis}"
    params, params_basis = _model_params(
        session, tenant_id, spec.warm_start_checkpoint_id or spec.model, catalog, access
    )
    found = machinetime.estimate_hours(
        tokens=tokens,
        token_basis=token_basis,
        params=params,
        params_basis=params_basis,
        lora=spec.lora is not None,
        gpus=spec.resources.gpus,
        gpu_type=spec.resources.gpu_type,
        measured=_measured(session, tenant_id, spec, kind),
        probed=_probed_rate(session, tenant_id, spec),
    )
    if found is None:
        return kind, None, f"machine time follows from the model's size: {params_basis}"
    return kind, found.hours, found.basis


def units(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    spec: JobOptions,
    catalog: Mapping[str, CatalogEntry] | None = None,
    access: Access | None = None,
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
        return [_train_time(session, tenant_id, spec, catalog or {}, access)]
    return []


def estimate(
    session: Session,
    store: ArtifactStore,
    book: PriceBook,
    tenant_id: str,
    job_type: JobType,
    spec: JobOptions,
    catalog: Mapping[str, CatalogEntry] | None = None,
    access: Access | None = None,
) -> CostEstimate:
    """The expected charge of ``spec``, priced by the version of ``book`` in force now (``access``: what
    the tenant may read on this server, to size a local model directory)."""
    version = book.version_at(datetime.now(UTC))
    gpu_type = spec.resources.gpu_type
    lines, total, cents, complete = [], Decimal(0), 0, True
    # A verified job runs as replicas, each billed (more start only after a disagreement).
    copies = spec.verification.replicas if spec.verification is not None else 1
    for kind, quantity, basis in units(session, store, tenant_id, spec, catalog, access):
        if copies > 1:
            quantity = None if quantity is None else quantity * copies
            basis = f"{basis}, x {copies} replicas"
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
