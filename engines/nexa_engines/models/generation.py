"""Batched text generation with a KV cache: the decode loop shared by evaluate, local teachers and serving.

Prompts are left-padded into one batch; every step feeds one new token per row
and reuses the cache. Rows finish independently (EOS, a stop string, or their
own token budget) and each may have its own temperature, so one batch serves
requests with different settings; ``on_token`` sees every row's new text as it
is produced, which is what streaming needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class GenerationRequest:
    """One prompt and how to continue it."""

    prompt: str
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None


@dataclass
class GenerationResult:
    """What one row produced."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    token_ids: list[int] = field(default_factory=list)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        filtered = torch.zeros_like(probs)
        filtered[order[keep]] = sorted_probs[keep]
        probs = filtered / filtered.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


@torch.no_grad()
def generate_batch(
    model: Any,
    tokenizer: Any,
    requests: Sequence[GenerationRequest],
    *,
    on_token: Callable[[int, str], None] | None = None,
    max_context: int | None = None,
) -> list[GenerationResult]:
    """Continue every request's prompt in one batch; ``on_token(row, new_text)`` streams the pieces."""
    if not requests:
        return []
    device = next(model.parameters()).device
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    limit = max_context or int(getattr(model.config, "max_position_embeddings", 2048))
    encoded = []
    for r in requests:
        ids = bos + tokenizer(r.prompt, add_special_tokens=False)["input_ids"]
        keep = max(1, limit - max(1, r.max_tokens))
        encoded.append(ids[-keep:])
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = len(encoded)
    input_ids = torch.full((rows, width), pad, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    for i, ids in enumerate(encoded):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    generators: list[torch.Generator | None] = []
    for r in requests:
        if r.seed is None:
            generators.append(None)
        else:
            g = torch.Generator(device="cpu")
            g.manual_seed(r.seed)
            generators.append(g)
    eos = tokenizer.eos_token_id
    produced: list[list[int]] = [[] for _ in requests]
    texts = [""] * rows
    finish: list[str | None] = [None] * rows
    budget = max(r.max_tokens for r in requests)
    cache = None
    step_ids, step_pos = input_ids, positions
    for _ in range(budget):
        out = model(
            input_ids=step_ids,
            attention_mask=attention,
            position_ids=step_pos,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float().cpu()
        next_ids = []
        for i, r in enumerate(requests):
            if finish[i] is not None:
                next_ids.append(pad)
                continue
            token = _sample(logits[i], r.temperature, r.top_p, generators[i])
            next_ids.append(token)
            if token == eos:
                finish[i] = "stop"
                continue
            produced[i].append(token)
            full = tokenizer.decode(produced[i], skip_special_tokens=True)
            cut = _first_stop(full, r.stop)
            if cut is not None:
                full = full[:cut]
                finish[i] = "stop"
            elif len(produced[i]) >= r.max_tokens:
                finish[i] = "length"
            # Hold back a trailing partial UTF-8 character until its bytes are complete.
            if not full.endswith("\ufffd") or finish[i] is not None:
                new = full[len(texts[i]) :]
                if new and on_token is not None:
                    on_token(i, new)
                texts[i] = full
        if all(f is not None for f in finish):
            break
        step_ids = torch.tensor(next_ids, dtype=torch.long, device=device).unsqueeze(1)
        attention = torch.cat([attention, torch.ones((rows, 1), dtype=torch.long, device=device)], dim=1)
        step_pos = step_pos[:, -1:] + 1
    return [
        GenerationResult(
            text=texts[i],
            prompt_tokens=len(encoded[i]),
            completion_tokens=len(produced[i])
            + (1 if finish[i] == "stop" and len(produced[i]) < requests[i].max_tokens else 0),
            finish_reason=finish[i] or "length",
            token_ids=produced[i],
        )
        for i in range(rows)
    ]
