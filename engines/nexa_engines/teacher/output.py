"""Write journaled samples as an SFT dataset artifact (``sft.parquet``: instruction, response)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nexa.contracts import InputSource
from nexa.ids import new_id
from nexa_engines.engine import EngineContext, EngineError

SFT_FILE = "sft.parquet"  # the SPEC's name (§8.2)
# More empty answers than this share, and the data is not worth training on: the job fails.
MAX_EMPTY_ANSWER_FRACTION = 0.5


def check_answers(records: list[dict[str, Any]], teacher: str) -> int:
    """The number of empty answers; ``EngineError(teacher_empty_answers)`` when they are most of the data.

    A teacher that answers nothing usable (a wrong model name behind a permissive
    endpoint, a prompt format it does not follow, a length limit of zero) must
    not end as a "completed" dataset of blanks.
    """
    empty = sum(1 for r in records if not str(r.get("response", "")).strip())
    if records and empty / len(records) > MAX_EMPTY_ANSWER_FRACTION:
        raise EngineError(
            "teacher_empty_answers",
            f"the teacher {teacher!r} gave empty answers for {empty} of {len(records)} prompts (more than "
            f"{MAX_EMPTY_ANSWER_FRACTION:.0%}); check its model, prompt format and max_tokens",
        )
    return empty


def commit_sft_dataset(
    ctx: EngineContext, records: list[dict[str, Any]], *, inputs: list[InputSource], config: dict[str, Any]
) -> tuple[str, int]:
    """Commit the records (sorted by index) as a new dataset; returns its id and the sum of tokens."""
    rows = sorted(records, key=lambda r: int(r["index"]))
    table = pa.table(
        {
            "instruction": [str(r["instruction"]) for r in rows],
            "response": [str(r["response"]) for r in rows],
            "source_index": [int(r["index"]) for r in rows],
            "prompt_tokens": [int(r.get("prompt_tokens", 0)) for r in rows],
            "completion_tokens": [int(r.get("completion_tokens", 0)) for r in rows],
        }
    )
    dataset_id = new_id("ds")
    tokens = int(sum(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in rows))
    with ctx.store.begin("dataset", dataset_id) as writer:
        pq.write_table(table, writer.path / SFT_FILE)
        writer.commit(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            tenant_id=ctx.tenant_id,
            pipeline_id=ctx.pipeline_id,
            inputs=inputs,
            config=config,
            metrics={"num_rows": len(rows), "columns": table.column_names, "estimated_tokens": tokens},
        )
    ctx.produced_artifacts.append(dataset_id)
    return dataset_id, tokens
