"""Training checkpoints in the artifact store: write, find the latest of a job, list.

Every checkpoint is its own ``ckpt_…`` artifact. Intermediate ones carry
``trainer_state.pt`` (optimizer, scheduler, RNG states, step) so a later attempt
of the same job resumes from the newest; the final one holds the weights, the
tokenizer, ``metrics.jsonl`` and ``loss_curve.png``. Manifests record the job,
attempt, step and metrics, which is all that listing and resuming read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexa.contracts import InputSource
from nexa.ids import new_id
from nexa_engines.engine import EngineContext
from nexa_store.base import ArtifactError, ArtifactStore

TRAINER_STATE = "trainer_state.pt"


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint as its manifest describes it."""

    checkpoint_id: str
    step: int
    attempt: int | None
    final: bool
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used in job results."""
        return {
            "checkpoint_id": self.checkpoint_id,
            "step": self.step,
            "attempt": self.attempt,
            "final": self.final,
            "metrics": self.metrics,
        }


def job_checkpoints(store: ArtifactStore, job_id: str) -> list[CheckpointInfo]:
    """Every committed checkpoint ``job_id`` wrote (any attempt), by step."""
    found = []
    for checkpoint_id in store.list_ids("checkpoint"):
        try:
            manifest = store.read_manifest(checkpoint_id, verify=False)
        except ArtifactError:
            continue
        if manifest.job_id != job_id:
            continue
        config = manifest.config or {}
        found.append(
            CheckpointInfo(
                checkpoint_id=checkpoint_id,
                step=int(config.get("step", 0)),
                attempt=manifest.attempt,
                final=bool(config.get("final", False)),
                metrics=dict(manifest.metrics or {}),
            )
        )
    return sorted(found, key=lambda c: (c.step, c.final))


def latest_resumable(store: ArtifactStore, job_id: str) -> CheckpointInfo | None:
    """The newest intermediate checkpoint of ``job_id`` that has trainer state, or None."""
    candidates = [c for c in job_checkpoints(store, job_id) if not c.final]
    return candidates[-1] if candidates else None


def commit_checkpoint(
    ctx: EngineContext,
    writer_fill: Any,
    *,
    step: int,
    final: bool,
    config: dict[str, Any],
    metrics: dict[str, Any],
    inputs: list[InputSource],
) -> str:
    """Stage a new checkpoint, let ``writer_fill(path)`` write its files, commit it, and record it as produced."""
    checkpoint_id = new_id("ckpt")
    with ctx.store.begin("checkpoint", checkpoint_id) as writer:
        writer_fill(Path(writer.path))
        writer.commit(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            tenant_id=ctx.tenant_id,
            pipeline_id=ctx.pipeline_id,
            inputs=inputs,
            config={**config, "step": step, "final": final},
            metrics=metrics,
        )
    ctx.produced_artifacts.append(checkpoint_id)
    return checkpoint_id
