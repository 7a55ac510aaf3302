"""One attempt of any engine, the same for the pull worker and ``run_one``: check, run, classify.

``run_engine`` checks every reference the spec carries for the context's tenant
(a claim or a NexaJob is not proof of access), runs the engine and returns its
result as plain JSON, validated against the job type's result model
(``nexa.contracts.results``). ``failure_of`` names how an attempt that raised ended, so a
worker's report and a pod's termination message use the same code for the same
thing (``nexa.contracts.ErrorCode``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nexa.contracts import ErrorCode, JobType
from nexa.contracts.refs import job_references
from nexa.contracts.results import result_for
from nexa_engines.engine import EngineContext, EngineError, EngineFn, JobCancelled
from nexa_store.access import AccessDenied, check_reference
from nexa_store.pinned import release_views

MAX_FAIL_MESSAGE = 20_000  # FailReport.message limit


@dataclass(frozen=True)
class Failure:
    """How an attempt ended when it raised: the code, a message for the user, and whether to retry."""

    code: str
    message: str
    retryable: bool = False


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def json_result(result: Any) -> dict[str, Any]:
    """The engine's result as plain JSON types (numpy scalars, paths and dates converted)."""
    if not isinstance(result, dict):
        raise TypeError(f"the engine returned {type(result).__name__}, not a dict")
    plain = json.loads(json.dumps(result, default=_jsonable, allow_nan=False))
    assert isinstance(plain, dict)
    return plain


def summary(exc: BaseException) -> str:
    """``Type: message``, cut to fit a report."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= MAX_FAIL_MESSAGE - 100 else text[: MAX_FAIL_MESSAGE - 103] + "..."


def check_inputs(ctx: EngineContext, spec: BaseModel) -> None:
    """Every reference ``spec`` carries, checked for ``ctx``'s tenant; ``EngineError`` naming the field."""
    for ref in job_references(spec):
        try:
            check_reference(ctx.access, ctx.store, ref)
        except AccessDenied as exc:
            raise EngineError(exc.code, f"{ref.field}: {exc.message}") from exc


def run_engine(engine: EngineFn, ctx: EngineContext, spec: BaseModel, job_type: JobType) -> dict[str, Any]:
    """Check the inputs, run the engine, and return its result as plain JSON, checked against its contract."""
    try:
        check_inputs(ctx, spec)
        result = json_result(engine(ctx, spec))
    finally:
        # Local inputs were read through descriptors pinned for this attempt (nexa_store.pinned).
        release_views(ctx.workdir)
    try:
        result_for(job_type, result)
    except ValidationError as exc:
        # An engine bug, never the user's: the attempt fails (retryable) rather than hand out a result
        # that breaks its documented shape.
        raise EngineError(
            ErrorCode.result_invalid,
            f"the {job_type.value} engine's result does not match its contract: {summary(exc)}",
            retryable=True,
        ) from exc
    return result


def failure_of(error: BaseException, *, stopped: bool) -> Failure:
    """How an attempt that raised ``error`` ended.

    ``stopped``: the process running it was being stopped (worker shutdown, pod
    termination), so a cancellation is that stop (retryable), not the user's cancel.
    """
    if isinstance(error, JobCancelled):
        if stopped:
            return Failure(ErrorCode.worker_shutdown, "the process running this attempt was stopped", True)
        return Failure(ErrorCode.cancelled, "cancelled by the user")
    if isinstance(error, EngineError):
        return Failure(error.code[:100] or "engine_error", error.message[:MAX_FAIL_MESSAGE], error.retryable)
    if isinstance(error, ValidationError):
        return Failure(ErrorCode.invalid_spec, f"the job's spec cannot be read: {summary(error)}")
    return Failure(ErrorCode.engine_crashed, f"{summary(error)} (the traceback is in the job's log)", True)
