"""OpenAI API shapes: request validation and response/stream-chunk bodies for completions and chat."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nexa_engines.models.generation import GenerationResult

CHAT_STOPS = ("### Instruction:", "### System:", "### Response:")


class _Lenient(BaseModel):
    # Clients send fields we do not use (user, seed, logit_bias...): accept and ignore them.
    model_config = ConfigDict(extra="ignore")


class CompletionRequest(_Lenient):
    model: str = ""
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1, le=4096)
    temperature: float | None = Field(1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    n: int | None = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    seed: int | None = None


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
    n: int | None = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    stream: bool | None = False
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


def completion_body(model: str, results: list[GenerationResult]) -> dict[str, Any]:
    """A ``text_completion`` response."""
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ],
        "usage": usage(results),
    }


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


def chat_body(model: str, result: GenerationResult, content: str) -> dict[str, Any]:
    """A ``chat.completion`` response."""
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage([result]),
    }


def chat_chunk(
    response_id: str, model: str, delta: dict[str, Any], finish_reason: str | None
) -> dict[str, Any]:
    """One streamed ``chat.completion.chunk``."""
    return {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
