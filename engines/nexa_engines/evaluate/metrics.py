"""Evaluation metrics on held-out SFT rows: exact match, accuracy, perplexity, judge scores."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from nexa_engines.models.generation import GenerationRequest, generate_batch
from nexa_engines.models.prompt import format_prompt, normalize_answer
from nexa_engines.train.data import tokenize_pairs


def predictions(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 32,
    max_tokens: int = 32,
) -> list[str]:
    """Greedy answers to every instruction."""
    out: list[str] = []
    for start in range(0, len(pairs), batch_size):
        group = pairs[start : start + batch_size]
        requests = [
            GenerationRequest(format_prompt(p), max_tokens=max_tokens, stop=("###",)) for p, _ in group
        ]
        out += [r.text for r in generate_batch(model, tokenizer, requests)]
    return out


def exact_match(predicted: Sequence[str], references: Sequence[str]) -> float:
    """Share of answers equal to the reference after normalization (first line, case, spaces, final period)."""
    if not references:
        return 0.0
    return sum(
        normalize_answer(p) == normalize_answer(r) for p, r in zip(predicted, references, strict=True)
    ) / len(references)


def accuracy(predicted: Sequence[str], references: Sequence[str]) -> float:
    """Share of answers that contain the normalized reference as whole words (lenient exact match)."""
    if not references:
        return 0.0
    hits = 0
    for p, r in zip(predicted, references, strict=True):
        ref = normalize_answer(r)
        hits += (
            bool(ref)
            and re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", normalize_answer(p) or p.lower()) is not None
        )
    return hits / len(references)


@torch.no_grad()
def perplexity(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, max_len: int = 1024, batch_size: int = 16
) -> float:
    """exp(mean negative log-likelihood of the response tokens given the prompt)."""
    examples = tokenize_pairs(tokenizer, list(pairs), max_len)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        group = examples[start : start + batch_size]
        width = max(len(e.input_ids) for e in group)
        pad = tokenizer.pad_token_id
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        labels = torch.full((len(group), width), -100, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, e in enumerate(group):
            ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
            labels[i, : len(e.labels)] = torch.tensor(e.labels)
            mask[i, : len(e.input_ids)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]),
            shift_labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        total += float(nll)
        count += int((shift_labels != -100).sum())
    return math.exp(total / count) if count else float("nan")
