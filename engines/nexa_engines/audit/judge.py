"""LLM-as-a-judge: score sampled rows 1-5 through an OpenAI-compatible chat endpoint.

Requests run with bounded concurrency; 429, 5xx, timeouts and connection errors
are retried with exponential backoff (honouring ``Retry-After``). A rejected key
fails the job at once; a row whose answer holds no score stays unscored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from nexa.contracts import JudgeConfig
from nexa_engines.engine import EngineError

SYSTEM_PROMPT = (
    "You rate training examples for fine-tuning a helpful assistant. Consider correctness, "
    "helpfulness, clarity and safety of the response given the request. "
    'Answer with JSON only: {"score": N} where N is an integer from 1 (unusable) to 5 (excellent).'
)
MAX_PROMPT_CHARS = 8000
MAX_RETRIES = 4
_RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_SCORE_KEY_RE = re.compile(r"score\D{0,12}?([1-5](?:\.\d+)?)", re.IGNORECASE)
_BARE_SCORE_RE = re.compile(r"(?<![\d.])([1-5](?:\.\d+)?)(?![\d.])")


def parse_score(answer: str) -> float | None:
    """The 1-5 score in a judge's answer (JSON ``{"score": N}``, "Score: N", or a lone number)."""
    text = answer.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("score"), int | float):
        value = float(parsed["score"])
        return value if 1.0 <= value <= 5.0 else None
    if isinstance(parsed, int | float) and not isinstance(parsed, bool):
        return float(parsed) if 1.0 <= parsed <= 5.0 else None
    for pattern in (_SCORE_KEY_RE, _BARE_SCORE_RE):
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            return value if 1.0 <= value <= 5.0 else None
    return None


@dataclass
class JudgeOutcome:
    """Scores in request order (``None`` where no score came back) and request accounting."""

    scores: list[float | None]
    requests: int
    failures: int


class _Unauthorized(Exception):
    pass


def _api_key(config: JudgeConfig) -> str | None:
    if config.api_key_env is None:
        return None
    from nexa_store.access import AccessDenied
    from nexa_store.outbound import key_for_url

    try:
        # The judge's URL is the user's: a worker key goes there only if the operator allows it.
        key = key_for_url(config.api_key_env, str(config.base_url))
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    if not key:
        raise EngineError(
            "judge_api_key_missing",
            f"the judge's API key variable {config.api_key_env} is not set on this worker",
        )
    return key


def _backoff(attempt: int, base: float, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(30.0, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return float(base * (2**attempt) * (0.5 + random.random()))


async def _score_one(
    client: httpx.AsyncClient, config: JudgeConfig, text: str, backoff_base: float, counter: list[int]
) -> float | None:
    body = {
        "model": config.model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Rate this example:\n\n" + text[:MAX_PROMPT_CHARS]},
        ],
        "temperature": 0,
        "max_tokens": 20,
    }
    for attempt in range(MAX_RETRIES + 1):
        counter[0] += 1
        retry_after: str | None = None
        try:
            response = await client.post("chat/completions", json=body)
        except (httpx.TimeoutException, httpx.TransportError):
            if attempt == MAX_RETRIES:
                return None
        else:
            if response.status_code in (401, 403):
                raise _Unauthorized(f"HTTP {response.status_code}: {response.text[:200]}")
            if response.status_code < 300:
                try:
                    content = response.json()["choices"][0]["message"]["content"]
                except (ValueError, KeyError, IndexError, TypeError):
                    return None
                return parse_score(content) if isinstance(content, str) else None
            if response.status_code not in _RETRY_STATUSES or attempt == MAX_RETRIES:
                return None
            retry_after = response.headers.get("retry-after")
        await asyncio.sleep(_backoff(attempt, backoff_base, retry_after))
    return None


async def _score_all(
    config: JudgeConfig,
    texts: list[str],
    check_cancelled: Callable[[], None],
    on_done: Callable[[int], None],
    backoff_base: float,
) -> JudgeOutcome:
    from nexa_store.access import AccessDenied
    from nexa_store.outbound import check_url
    from nexa_store.outbound_transport import async_policy_transport

    try:
        check_url(str(config.base_url), resolve=True)
    except AccessDenied as exc:
        raise EngineError(exc.code, exc.message) from exc
    headers = {"content-type": "application/json"}
    key = _api_key(config)
    if key:
        headers["authorization"] = f"Bearer {key}"
    base_url = str(config.base_url).rstrip("/") + "/"
    limits = httpx.Limits(max_connections=config.concurrency)
    scores: list[float | None] = [None] * len(texts)
    counter = [0]
    semaphore = asyncio.Semaphore(config.concurrency)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=config.timeout_seconds,
        limits=limits,
        # Connections go only where the outbound policy allows, checked as each one opens.
        transport=async_policy_transport(limits=limits),
    ) as client:

        async def run(i: int) -> None:
            async with semaphore:
                scores[i] = await _score_one(client, config, texts[i], backoff_base, counter)

        tasks = [asyncio.create_task(run(i)) for i in range(len(texts))]
        try:
            done = 0
            for next_done in asyncio.as_completed(tasks):
                await next_done
                done += 1
                on_done(done)
                check_cancelled()
        except _Unauthorized as exc:
            raise EngineError(
                "judge_unauthorized", f"the judge endpoint refused the API key ({exc})"
            ) from exc
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    failures = sum(1 for s in scores if s is None)
    return JudgeOutcome(scores=scores, requests=counter[0], failures=failures)


def judge_texts(
    config: JudgeConfig,
    texts: list[str],
    *,
    check_cancelled: Callable[[], None] = lambda: None,
    on_done: Callable[[int], None] = lambda _n: None,
    backoff_base: float = 0.5,
) -> JudgeOutcome:
    """Score ``texts`` with the judge; blocks until all are scored (safe to call from any thread)."""

    def go() -> JudgeOutcome:
        return asyncio.run(_score_all(config, texts, check_cancelled, on_done, backoff_base))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return go()
    # Called from inside an event loop: run ours on a separate thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(go).result()
