"""An OpenAI-compatible chat client with retries: backoff on 429, 5xx, timeouts and dropped connections."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from nexa_store.outbound_transport import policy_transport

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class TeacherError(Exception):
    """A request the teacher refused or kept failing; ``retryable`` says whether a later attempt may work."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Completion:
    """One answer and its token counts (from the endpoint's ``usage``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int


def backoff_seconds(attempt: int, retry_after: str | None, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``Retry-After`` when given, else jittered exponential."""
    if retry_after:
        try:
            return min(cap, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return float(min(cap, base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))


class ChatClient:
    """POSTs ``/chat/completions`` to ``base_url`` with up to ``max_retries`` retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Connections go only where the outbound policy allows, checked as each one opens.
        self._http = httpx.Client(timeout=timeout, headers=headers, transport=transport or policy_transport())
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self._http.close()

    def chat(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float) -> Completion:
        """The assistant's answer to ``messages``; ``TeacherError`` after the retries are spent."""
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        last = ""
        for attempt in range(1, self.max_retries + 2):
            self.requests += 1
            retry_after = None
            try:
                answer = self._http.post(f"{self.base_url}/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code == 200:
                    return _parse(answer)
                last = f"HTTP {answer.status_code}: {answer.text[:300]}"
                if answer.status_code not in RETRYABLE_STATUS:
                    raise TeacherError(f"the teacher refused the request ({last})", retryable=False)
                retry_after = answer.headers.get("retry-after")
            if attempt > self.max_retries:
                break
            self.retries += 1
            self._sleep(backoff_seconds(attempt, retry_after))
        raise TeacherError(f"the teacher failed {self.max_retries + 1} times; last: {last}", retryable=True)


def _parse(answer: httpx.Response) -> Completion:
    try:
        data: Any = answer.json()
        text = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TeacherError(
            f"the teacher's answer is not a chat completion: {answer.text[:300]}", retryable=True
        ) from exc
    usage = data.get("usage") or {}
    return Completion(
        text=str(text),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
