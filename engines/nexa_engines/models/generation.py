"""Batched text generation with a KV cache: the decode loop shared by evaluate, local teachers and serving.

``DecodeBatch`` is a running batch that rows join and leave between decode
steps (continuous batching): a joining request's prompt is prefilled on its own
and its cache is left-padded into the batch's; every step feeds one new token
per row at that row's own position; a row that finishes (EOS, a stop string, or
its own token budget) leaves at once. Each row may have its own temperature, so
one batch serves requests with different settings; ``on_token`` sees every
row's new text as it is produced, which is what streaming needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache


@dataclass
class GenerationRequest:
    """One prompt and how to continue it."""

    prompt: str
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    # Token ids to continue instead of ``prompt`` (used as given: no BOS is added).
    prompt_ids: Sequence[int] | None = None


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


@dataclass
class _Row:
    """One sequence in a running batch: its request, what it produced, and the logits for its next token."""

    key: int
    request: GenerationRequest
    prompt_tokens: int
    generator: torch.Generator | None
    logits: torch.Tensor
    produced: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None

    def result(self) -> GenerationResult:
        # An EOS or stop hit consumed one more token than ``produced`` keeps.
        stopped_early = self.finish == "stop" and len(self.produced) < self.request.max_tokens
        return GenerationResult(
            text=self.text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.produced) + (1 if stopped_early else 0),
            finish_reason=self.finish or "length",
            token_ids=self.produced,
        )


def _kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class DecodeBatch:
    """A running decode batch: ``add`` joins requests, ``step`` decodes one token per row and retires finished rows."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        on_token: Callable[[int, str], None] | None = None,
        max_context: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.on_token = on_token
        self.device = next(model.parameters()).device
        self.limit = max_context or int(getattr(model.config, "max_position_embeddings", 2048))
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.rows: list[_Row] = []
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._attention = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self._positions = torch.zeros((0, 1), dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        return len(self.rows)

    def _encode(self, request: GenerationRequest) -> list[int]:
        ids = (
            list(request.prompt_ids)
            if request.prompt_ids is not None
            else encode_prompt(self.tokenizer, request.prompt)
        )
        return list(ids[-max(1, self.limit - max(1, request.max_tokens)) :])

    @torch.no_grad()
    def add(self, requests: Sequence[GenerationRequest], keys: Sequence[int]) -> None:
        """Prefill ``requests`` and join them to the batch; on error the running rows are untouched."""
        if not requests:
            return
        encoded = [self._encode(r) for r in requests]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True
        )
        logits = out.logits[:, -1, :].float().cpu()
        joined = self._merge(_kv(out.past_key_values), attention)
        self._kv, self._attention = joined
        self._positions = torch.cat([self._positions, positions[:, -1:] + 1], dim=0)
        for i, (request, key) in enumerate(zip(requests, keys, strict=True)):
            generator = None
            if request.seed is not None:
                generator = torch.Generator(device="cpu")
                generator.manual_seed(request.seed)
            self.rows.append(_Row(key, request, len(encoded[i]), generator, logits[i]))

    def _merge(
        self, kv: list[tuple[torch.Tensor, torch.Tensor]], attention: torch.Tensor
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        if not self.rows:
            return kv, attention
        width = max(attention.shape[1], self._attention.shape[1])
        merged = [
            (
                torch.cat([_left_pad(k0, width, 2), _left_pad(k1, width, 2)], dim=0),
                torch.cat([_left_pad(v0, width, 2), _left_pad(v1, width, 2)], dim=0),
            )
            for (k0, v0), (k1, v1) in zip(self._kv, kv, strict=True)
        ]
        mask = torch.cat([_left_pad(self._attention, width, 1), _left_pad(attention, width, 1)], dim=0)
        return merged, mask

    def _advance(self, row: _Row) -> int:
        """Sample ``row``'s next token, update its text and finish state, stream the new piece."""
        r = row.request
        token = _sample(row.logits, r.temperature, r.top_p, row.generator)
        if token == self.tokenizer.eos_token_id:
            row.finish = "stop"
            return token
        row.produced.append(token)
        full = self.tokenizer.decode(row.produced, skip_special_tokens=True)
        cut = _first_stop(full, r.stop)
        if cut is not None:
            full = full[:cut]
            row.finish = "stop"
        elif len(row.produced) >= r.max_tokens:
            row.finish = "length"
        # Hold back a trailing partial UTF-8 character until its bytes are complete.
        if not full.endswith("\ufffd") or row.finish is not None:
            new = full[len(row.text) :]
            if new and self.on_token is not None:
                self.on_token(row.key, new)
            row.text = full
        return token

    @torch.no_grad()
    def step(self) -> list[tuple[int, GenerationResult]]:
        """Pick every row's next token; finished rows leave and come back as (key, result), the rest advance."""
        tokens = [self._advance(row) for row in self.rows]
        done = [(row.key, row.result()) for row in self.rows if row.finish is not None]
        keep = [i for i, row in enumerate(self.rows) if row.finish is None]
        if len(keep) < len(self.rows):
            self._select(keep)
            tokens = [tokens[i] for i in keep]
        if not self.rows:
            return done
        step_ids = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        ones = torch.ones((len(self.rows), 1), dtype=torch.long, device=self.device)
        self._attention = torch.cat([self._attention, ones], dim=1)
        out = self.model(
            input_ids=step_ids,
            attention_mask=self._attention,
            position_ids=self._positions,
            past_key_values=DynamicCache(self._kv),
            use_cache=True,
        )
        self._kv = _kv(out.past_key_values)
        self._positions = self._positions + 1
        logits = out.logits[:, -1, :].float().cpu()
        for i, row in enumerate(self.rows):
            row.logits = logits[i]
        return done

    def _select(self, keep: list[int]) -> None:
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._kv, self._positions = [], self._positions[:0]
            self._attention = self._attention[:0, :0]
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        attention = self._attention.index_select(0, index)
        # Columns that only the rows that left used are padding now: drop them.
        used = attention.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else attention.shape[1]
        self._attention = attention[:, start:]
        self._positions = self._positions.index_select(0, index)
        self._kv = [
            (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
            for k, v in self._kv
        ]

    def reset(self) -> None:
        """Drop every row (after a failed step the batch's state cannot be trusted)."""
        self._select([])


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
    batch = DecodeBatch(model, tokenizer, on_token=on_token, max_context=max_context)
    batch.add(requests, range(len(requests)))
    results: dict[int, GenerationResult] = {}
    while batch:
        results.update(batch.step())
    return [results[i] for i in range(len(requests))]


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """A text prompt's ids as generation sees them: BOS (when the tokenizer has one), then the text."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


@dataclass
class TokenScores:
    """Each token's log-probability given the ones before it (None for the first), and the ``top`` best."""

    token_logprobs: list[float | None]
    top_logprobs: list[dict[int, float] | None]


@torch.no_grad()
def score_tokens(model: Any, ids: Sequence[int], top: int = 0) -> TokenScores:
    """Log-probabilities of ``ids`` under ``model``, one forward pass (what ``echo`` with ``logprobs`` needs)."""
    if not ids:
        return TokenScores([], [])
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([list(ids)], device=device)).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1).cpu()
    chosen: list[float | None] = [None]
    best: list[dict[int, float] | None] = [None]
    for i in range(1, len(ids)):
        row = logp[i - 1]
        chosen.append(float(row[ids[i]]))
        if top > 0:
            values, indices = torch.topk(row, top)
            best.append({int(t): float(v) for t, v in zip(indices.tolist(), values.tolist(), strict=True)})
        else:
            best.append(None)
    return TokenScores(chosen, best)
