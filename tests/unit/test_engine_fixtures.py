"""Shared helpers for the ML engine tests: an in-process engine context and a tiny base model.

(Named test_engine_* to live beside the tests that use it; it defines no tests itself.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nexa_engines.engine import EngineContext
from nexa_store.local import LocalArtifactStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEXA_TORCH_THREADS", "2")


class RecordingReporter:
    """Keeps every progress value, log line and usage amount an engine reports."""

    def __init__(self) -> None:
        self.progress_values: list[tuple[float, str | None]] = []
        self.lines: list[str] = []
        self.usage_totals: dict[str, float] = {}

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.progress_values.append((fraction, message))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def usage(self, kind: str, amount: float) -> None:
        self.usage_totals[kind] = self.usage_totals.get(kind, 0.0) + amount


def make_ctx(
    root: Path, *, job_id: str = "job_aaaaaaaaaaaaaaaaaaaaaaaaaa", attempt: int = 1
) -> EngineContext:
    """An engine context on a local store under ``root`` that may read anything under ``root``."""
    store = LocalArtifactStore(root / "artifacts")
    workdir = root / f"work-{attempt}"
    workdir.mkdir(parents=True, exist_ok=True)
    return EngineContext(
        job_id=job_id,
        attempt=attempt,
        tenant_id="default",
        store=store,
        reporter=RecordingReporter(),
        workdir=workdir,
        allowed_roots=[root],
    )


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as a parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def reporter_of(ctx: EngineContext) -> RecordingReporter:
    """The context's reporter, typed."""
    assert isinstance(ctx.reporter, RecordingReporter)
    return ctx.reporter
