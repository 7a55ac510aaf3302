"""What the OpenAI routes need of the model beyond generation: token ids, ``echo`` and ``logprobs``.

Log-probabilities are computed by one forward pass over the prompt and what was
generated (``score_tokens``), the same numbers a client such as
lm-evaluation-harness sums for a loglikelihood task. The ``logprobs`` object is
the legacy completions shape: ``tokens``, ``token_logprobs`` (None for the very
first token, which has no context), ``top_logprobs`` and ``text_offset``.
"""

from __future__ import annotations

import threading
from typing import Any

from nexa_engines.models.generation import GenerationRequest, GenerationResult, encode_prompt, score_tokens


class TokenTools:
    """The served model and its tokenizer, for token-level answers (one scoring pass at a time)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The ids generation continued: the client's own, or the text encoded as generation encodes it."""
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        return encode_prompt(self.tokenizer, request.prompt)

    def prompt_text(self, request: GenerationRequest) -> str:
        if request.prompt_ids is not None:
            return str(self.tokenizer.decode(list(request.prompt_ids)))
        return request.prompt

    def nothing_generated(self, request: GenerationRequest) -> GenerationResult:
        """The result of ``max_tokens: 0`` (echo only): the prompt, scored, and no new tokens."""
        return GenerationResult(
            text="", prompt_tokens=len(self.prompt_ids(request)), completion_tokens=0, finish_reason="length"
        )

    def completion_logprobs(
        self, request: GenerationRequest, result: GenerationResult, *, echo: bool, top: int
    ) -> tuple[str, dict[str, Any]]:
        """The choice's text (the prompt first, with ``echo``) and its ``logprobs`` object."""
        prompt_ids = self.prompt_ids(request)
        ids = prompt_ids + list(result.token_ids)
        with self._lock:
            scores = score_tokens(self.model, ids, top)
        prompt_text = self.prompt_text(request)
        # A BOS generation added itself is no token of the client's prompt.
        added_bos = request.prompt_ids is None and self.tokenizer.bos_token_id is not None
        first = (1 if added_bos else 0) if echo else len(prompt_ids)
        pieces = [str(self.tokenizer.decode([ids[i]])) for i in range(first, len(ids))]
        offsets, at = [], 0 if echo else len(prompt_text)
        for piece in pieces:
            offsets.append(at)
            at += len(piece)
        top_logprobs = [
            None if best is None else {str(self.tokenizer.decode([t])): lp for t, lp in best.items()}
            for best in scores.top_logprobs[first:]
        ]
        logprobs = {
            "tokens": pieces,
            "token_logprobs": scores.token_logprobs[first:],
            "top_logprobs": top_logprobs,
            "text_offset": offsets,
        }
        return (prompt_text + result.text) if echo else result.text, logprobs
