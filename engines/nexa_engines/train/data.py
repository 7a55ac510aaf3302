"""SFT examples as token ids, and batches of them: packed (block-diagonal attention) or padded.

Packing puts several examples into one row of ``capacity`` tokens (first-fit
decreasing, from ``nexa_engines.kernels``). Each example keeps its own position
ids (restarting at 0) and attends only to itself, through a 4-D block-diagonal
causal mask, so a packed row computes exactly what the examples would alone:
no cross-contamination. Labels are -100 on prompts and padding, so the loss is
over response tokens only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import torch

from nexa_engines import kernels
from nexa_engines.engine import EngineError
from nexa_engines.models.prompt import format_prompt

IGNORE = -100
PROMPT_COLUMNS = ("instruction", "prompt", "question", "input")
RESPONSE_COLUMNS = ("response", "completion", "answer", "output")


def read_table(path: Path, fmt: str) -> pa.Table:
    """The whole dataset file as an Arrow table."""
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "jsonl":
        if path.name.lower().endswith(".gz"):
            import gzip

            with gzip.open(path, "rb") as fh:
                return pajson.read_json(fh)
        return pajson.read_json(path)
    return pacsv.read_csv(path)


def pick_column(columns: Sequence[str], choices: Sequence[str], what: str) -> str:
    lowered = {c.lower(): c for c in columns}
    for name in choices:
        if name in lowered:
            return lowered[name]
    raise EngineError(
        "dataset_columns",
        f"the dataset has no {what} column (looked for {', '.join(choices)}; it has {', '.join(columns)})",
    )


def sft_pairs(table: pa.Table) -> list[tuple[str, str]]:
    """(instruction, response) pairs from a table; rows with an empty side are dropped."""
    prompt_col = pick_column(table.column_names, PROMPT_COLUMNS, "instruction")
    response_col = pick_column(table.column_names, RESPONSE_COLUMNS, "response")
    pairs = []
    for prompt, response in zip(
        table.column(prompt_col).to_pylist(), table.column(response_col).to_pylist(), strict=True
    ):
        if prompt and response and str(prompt).strip() and str(response).strip():
            pairs.append((str(prompt), str(response)))
    return pairs


@dataclass(frozen=True)
class Example:
    """One tokenized example: ids and labels of equal length."""

    input_ids: list[int]
    labels: list[int]


def tokenize_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_len: int) -> list[Example]:
    """Prompt tokens (label -100) then response tokens and EOS, cut to ``max_len``."""
    prompts = [format_prompt(p) for p, _ in pairs]
    responses = [r.strip() for _, r in pairs]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = tokenizer.eos_token_id
    examples = []
    for p_ids, r_ids in zip(prompt_ids, response_ids, strict=True):
        ids = bos + list(p_ids) + list(r_ids) + [eos]
        labels = [IGNORE] * (len(bos) + len(p_ids)) + list(r_ids) + [eos]
        if len(ids) > max_len:
            ids, labels = ids[:max_len], labels[:max_len]
        if any(label != IGNORE for label in labels[1:]):
            examples.append(Example(ids, labels))
    return examples


@dataclass
class Batch:
    """Model inputs for one step plus how many of its slots hold real tokens."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor  # (rows, 1, L, L) bool for packed rows; (rows, L) for padded rows
    real_tokens: int
    slots: int

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device``."""
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.position_ids.to(device),
            self.attention_mask.to(device),
            self.real_tokens,
            self.slots,
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for a causal LM's forward (labels included)."""
        return {
            "input_ids": self.input_ids,
            "labels": self.labels,
            "position_ids": self.position_ids,
            "attention_mask": self.attention_mask,
        }


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """(rows, 1, L, L) bool: token q sees token k when both are in the same segment and k <= q."""
    length = segments.shape[-1]
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=segments.device))
    return (same & causal)[:, None, :, :]


def pack_rows(examples: Sequence[Example], capacity: int, pad_id: int) -> list[dict[str, np.ndarray]]:
    """Examples packed into rows of ``capacity`` tokens; each row has ids, labels, positions, segments."""
    lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    if len(lengths) == 0:
        return []
    packing = kernels.pack_sequences(lengths, capacity)
    positions = kernels.position_ids(lengths, packing, pad=0)
    rows = []
    for b in range(packing.num_bins):
        rows.append(
            {
                "input_ids": np.full(capacity, pad_id, dtype=np.int64),
                "labels": np.full(capacity, IGNORE, dtype=np.int64),
                "position_ids": positions[b].astype(np.int64),
                # Padding slots get segment -1 and so attend only to other padding, never to an example.
                "segments": np.full(capacity, -1, dtype=np.int64),
                "used": np.zeros(1, dtype=np.int64),
            }
        )
    for i, example in enumerate(examples):
        row = rows[int(packing.bins[i])]
        start = int(packing.offsets[i])
        end = start + len(example.input_ids)
        row["input_ids"][start:end] = example.input_ids
        row["labels"][start:end] = example.labels
        row["segments"][start:end] = i
        row["used"][0] += len(example.input_ids)
    # Bins with few tokens last, so a batch of rows has similar fill; the order is fixed by the packing.
    return rows


def packed_batches(
    rows: Sequence[dict[str, np.ndarray]], order: Sequence[int], batch_rows: int
) -> Iterator[Batch]:
    """Batches of ``batch_rows`` packed rows, in ``order``."""
    for start in range(0, len(order), batch_rows):
        chosen = [rows[i] for i in order[start : start + batch_rows]]
        segments = torch.from_numpy(np.stack([r["segments"] for r in chosen]))
        real = int(sum(int(r["used"][0]) for r in chosen))
        yield Batch(
            input_ids=torch.from_numpy(np.stack([r["input_ids"] for r in chosen])),
            labels=torch.from_numpy(np.stack([r["labels"] for r in chosen])),
            position_ids=torch.from_numpy(np.stack([r["position_ids"] for r in chosen])),
            attention_mask=block_causal_mask(segments),
            real_tokens=real,
            slots=int(segments.numel()),
        )


def padded_batches(
    examples: Sequence[Example], order: Sequence[int], batch_size: int, pad_id: int
) -> Iterator[Batch]:
    """One example per row, right-padded to the longest in its batch."""
    for start in range(0, len(order), batch_size):
        chosen = [examples[i] for i in order[start : start + batch_size]]
        width = max(len(e.input_ids) for e in chosen)
        ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chosen), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for r, e in enumerate(chosen):
            n = len(e.input_ids)
            ids[r, :n] = torch.tensor(e.input_ids)
            labels[r, :n] = torch.tensor(e.labels)
            mask[r, :n] = 1
        positions = torch.arange(width).unsqueeze(0).expand(len(chosen), width).clone()
        real = int(mask.sum())
        yield Batch(ids, labels, positions, mask, real, int(mask.numel()))


def split_holdout(
    pairs: Sequence[tuple[str, str]], fraction: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, held-out): a seeded random ``fraction`` held out (at least one row when fraction > 0)."""
    if fraction <= 0 or len(pairs) < 2:
        return list(pairs), []
    order = np.random.default_rng(seed).permutation(len(pairs))
    count = min(len(pairs) - 1, max(1, round(len(pairs) * fraction)))
    held = sorted(order[:count].tolist())
    held_set = set(held)
    return [p for i, p in enumerate(pairs) if i not in held_set], [pairs[i] for i in held]
