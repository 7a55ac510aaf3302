"""The distill engine: a teacher answers every prompt of a dataset; the answers become an SFT dataset.

Prompts come from the dataset's instruction column (``instruction``, ``prompt``,
``question`` or ``input``). Every answered sample is journaled in the store, so a
retried attempt asks only for what is missing; samples the teacher kept failing
fail the attempt as retryable, and the next attempt asks for just those.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nexa.contracts import DistillSpec, InputSource
from nexa.contracts.refs import artifact_ref_uri
from nexa_engines.engine import EngineContext, EngineError
from nexa_engines.teacher.client import Completion
from nexa_engines.teacher.journal import SampleJournal
from nexa_engines.teacher.output import SFT_FILE, check_answers, commit_sft_dataset
from nexa_engines.teacher.resolve import teacher_for
from nexa_engines.teacher.runner import run_samples
from nexa_engines.train.data import PROMPT_COLUMNS, pick_column, read_table
from nexa_store.datasets import DatasetRefError, fetch_dataset


def run(ctx: EngineContext, spec: DistillSpec) -> dict[str, Any]:
    """Distill ``spec.dataset_id`` with ``spec.teacher``; return the SPEC result."""
    if not isinstance(spec, DistillSpec):
        spec = DistillSpec.model_validate(spec)
    try:
        dataset = fetch_dataset(spec.dataset_id, store=ctx.store, access=ctx.access, workdir=ctx.workdir)
    except DatasetRefError as exc:
        raise EngineError(exc.code, exc.message) from exc
    table = read_table(dataset.path, dataset.format)
    column = pick_column(table.column_names, PROMPT_COLUMNS, "prompt")
    prompts = [str(p) if p is not None else "" for p in table.column(column).to_pylist()]
    indices = [i for i, p in enumerate(prompts) if p.strip()]
    if spec.max_samples is not None:
        indices = indices[: spec.max_samples]
    if not indices:
        raise EngineError("dataset_empty", f"{spec.dataset_id} has no non-empty prompt in column {column!r}")
    journal = SampleJournal(ctx)
    resumed = journal.load()
    if resumed:
        ctx.log(f"resuming: {resumed} samples were answered by an earlier attempt")
    teacher = teacher_for(ctx, spec)
    ctx.log(f"teacher {teacher.name}: {len(indices)} prompts, concurrency {spec.concurrency}")

    def make_sample(
        index: int, ask: Callable[[list[list[dict[str, str]]]], list[Completion]]
    ) -> dict[str, Any]:
        messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
        messages.append({"role": "user", "content": prompts[index]})
        answer = ask([messages])[0]
        return {
            "index": index,
            "instruction": prompts[index],
            "response": answer.text,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
        }

    started = time.monotonic()

    def on_done(done: int) -> None:
        ctx.progress(0.05 + 0.9 * done / len(indices), f"{done}/{len(indices)} samples")

    try:
        stats = run_samples(
            ctx, teacher, indices, make_sample, journal,
            concurrency=spec.concurrency, max_tokens=spec.max_tokens, temperature=spec.temperature, on_done=on_done,
        )  # fmt: skip
    finally:
        teacher.close()
    ctx.usage("prompt_tokens", stats.prompt_tokens)
    ctx.usage("completion_tokens", stats.completion_tokens)
    missing = [i for i in indices if i not in journal.done]
    if missing:
        for line in stats.failures[:10]:
            ctx.log(line)
        raise EngineError(
            "teacher_failed",
            f"{len(missing)} of {len(indices)} samples have no answer yet; a retry asks only for those",
            retryable=True,
        )
    records = [journal.done[i] for i in indices]
    empty = check_answers(records, str(spec.teacher))
    dataset_id, tokens = commit_sft_dataset(
        ctx,
        records,
        inputs=[
            InputSource(uri=dataset.uri, sha256=dataset.sha256, artifact_id=dataset.artifact_id),
            # Lineage reaches the teacher too (a `dp_…` deployment is followed to its checkpoint).
            InputSource(uri=f"teacher:{spec.teacher}"),
        ],
        config={
            "teacher": spec.teacher,
            "max_tokens": spec.max_tokens,
            "temperature": spec.temperature,
            # Lineage: the model this data was made for (Forge's student_model).
            **({"student_model": spec.student_model} if spec.student_model else {}),
        },
    )
    ctx.log(f"distilled {len(records)} samples in {time.monotonic() - started:.1f}s into {dataset_id}")
    return {
        "distilled_dataset_id": dataset_id,
        "sft_dataset_uri": f"{artifact_ref_uri(dataset_id)}/{SFT_FILE}",
        "num_samples": len(records),
        "estimated_tokens": tokens,
        "prompt_tokens": sum(int(r.get("prompt_tokens", 0)) for r in records),
        "completion_tokens": sum(int(r.get("completion_tokens", 0)) for r in records),
        "empty_responses": empty,
        "resumed_samples": resumed,
        "teacher": spec.teacher,
        "student_model": spec.student_model,
    }
