"""OpenAI API shapes: request validation and response/stream-chunk bodies for completions and chat."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nexa_engines.models.generation import GenerationResult

# Where a chat answer ends: the next block header or a blank line (``clean_completion``'s cut),
# applied while generating so a streamed answer and a whole one are the same text.
CHAT_STOPS = ("###", "\n\n")


class _Lenient(BaseModel):
    # Clients send fields we do not use (user, seed, logit_bias...): accept and ignore them.
    model_config = ConfigDict(extra="ignore")


MAX_N = 8
MAX_PROMPTS = 64
MAX_LOGPROBS = 5  # OpenAI's own limit for completions

TokenIds = list[Annotated[int, Field(ge=0, le=10_000_000)]]


class StreamOptions(_Lenient):
    include_usage: bool = False


class CompletionRequest(_Lenient):
    model: str = Field("", max_length=256)
    # A string, a batch of strings, one prompt as token ids, or a batch of token-id prompts.
    prompt: (
        Annotated[str, Field(max_length=1_000_000)]
        | Annotated[
            list[Annotated[str, Field(max_length=1_000_000)]], Field(min_length=1, max_length=MAX_PROMPTS)
        ]
        | Annotated[TokenIds, Field(min_length=1, max_length=131_072)]
        | Annotated[
            list[Annotated[TokenIds, Field(min_length=1, max_length=131_072)]],
            Field(min_length=1, max_length=MAX_PROMPTS),
        ]
    )
    max_tokens: int | None = Field(16, ge=0, le=4096)
    temperature: float | None = Field(1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    n: int | None = Field(1, ge=1, le=MAX_N)
    stop: str | list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=4)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    def prompts(self) -> list[str | list[int]]:
        """Each prompt of the request: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]
        return list(p)  # type: ignore[arg-type]


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (text parts of a multi-part content joined)."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_Lenient):
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    n: int | None = Field(1, ge=1, le=MAX_N)
    stop: str | list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=4)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = None

    def budget(self) -> int:
        """Token budget: ``max_completion_tokens``, else ``max_tokens``, else 128."""
        return self.max_completion_tokens or self.max_tokens or 128


def stops(value: str | list[str] | None) -> list[str]:
    """A request's stop sequences as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def new_id(prefix: str) -> str:
    """An OpenAI-style response id."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(results: list[GenerationResult]) -> dict[str, int]:
    """Prompt and completion token totals."""
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(
    model: str,
    results: list[GenerationResult],
    texts: list[str] | None = None,
    logprobs: list[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """A ``text_completion`` response (``texts`` replace the results' text when given: echo)."""
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "text": texts[i] if texts is not None else r.text,
                "logprobs": logprobs[i] if logprobs is not None else None,
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ],
        "usage": usage(results),
    }


def usage_chunk(response_id: str, model: str, obj: str, results: list[GenerationResult]) -> dict[str, Any]:
    """The last streamed chunk when ``stream_options.include_usage`` asks for it: no choices, the usage."""
    return {
        "id": response_id,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": usage(results),
    }


class StreamTrim:
    """Streams text exactly as the non-streaming answer reads: leading and trailing whitespace dropped.

    Trailing whitespace is held back until more text follows it, so the pieces
    joined equal ``text.strip()`` of the whole answer.
    """

    def __init__(self) -> None:
        self._started = False
        self._held = ""

    def feed(self, piece: str) -> str:
        if not self._started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self._started = True
        text = self._held + piece
        body = text.rstrip()
        self._held = text[len(body) :]
        return body


def completion_chunk(
    response_id: str, model: str, text: str, finish_reason: str | None, index: int = 0
) -> dict[str, Any]:
    """One streamed ``text_completion`` chunk."""
    return {
        "id": response_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def chat_body(model: str, results: list[GenerationResult]) -> dict[str, Any]:
    """A ``chat.completion`` response: one choice per result, its text trimmed as a stream is."""
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": result.text.strip()},
                "finish_reason": result.finish_reason,
            }
            for i, result in enumerate(results)
        ],
        "usage": usage(results),
    }


def chat_chunk(
    response_id: str, model: str, delta: dict[str, Any], finish_reason: str | None, index: int = 0
) -> dict[str, Any]:
    """One streamed ``chat.completion.chunk``."""
    return {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}],
    }
