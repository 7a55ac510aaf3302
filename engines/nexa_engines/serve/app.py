"""The serving HTTP app: OpenAI API (``/v1``) and Open Inference Protocol v2 (``/v2``) over one batcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from nexa_engines.models.generation import GenerationRequest, GenerationResult
from nexa_engines.models.prompt import format_chat
from nexa_engines.serve import oip
from nexa_engines.serve.auth import EndpointAuth
from nexa_engines.serve.batcher import BatchScheduler, Ticket
from nexa_engines.serve.metrics import ServingMetrics
from nexa_engines.serve.openai_api import (
    CHAT_STOPS,
    ChatRequest,
    CompletionRequest,
    StreamTrim,
    chat_body,
    chat_chunk,
    completion_body,
    completion_chunk,
    new_id,
    stops,
    usage_chunk,
)
from nexa_engines.serve.tokens import TokenTools


def _openai_error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
    )


def _plain(exc: ValidationError) -> str:
    """A validation failure as one plain sentence per field (no pydantic URLs or input echoes)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts[:5]) or "invalid request"


def _unknown_model(name: str, served: str) -> JSONResponse:
    return _openai_error(
        404,
        f"The model '{name}' does not exist: this endpoint serves '{served}'.",
        param="model",
        code="model_not_found",
    )


async def _wait(ticket: Ticket) -> GenerationResult:
    return await asyncio.to_thread(ticket.result)


async def _pieces(ticket: Ticket) -> AsyncIterator[tuple[str, Any]]:
    while True:
        kind, value = await asyncio.to_thread(ticket.events.get)
        yield kind, value
        if kind in ("done", "error"):
            return


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def _stream_failed(reason: object) -> str:
    """The events that end a stream whose generation failed: the error, then ``[DONE]``."""
    error = {"error": {"message": str(reason), "type": "server_error", "param": None, "code": None}}
    return _sse(error) + _sse("[DONE]")


def _usage_wanted(body: CompletionRequest | ChatRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def _with_usage(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    # With include_usage, every chunk but the last carries "usage": null (as OpenAI's do).
    return {**chunk, "usage": None} if include_usage else chunk


def create_app(
    scheduler: BatchScheduler,
    model_name: str,
    *,
    ready: bool = True,
    metrics: ServingMetrics | None = None,
    auth: EndpointAuth | None = None,
    tokens: TokenTools | None = None,
) -> FastAPI:
    """The FastAPI app serving ``model_name`` through ``scheduler``, with Prometheus metrics at ``/metrics``.

    ``tokens`` (the model and its tokenizer) enables token-id prompts, ``echo`` and ``logprobs``.
    """
    app = FastAPI(title=f"Nexa serving: {model_name}", docs_url=None, redoc_url=None)
    (metrics or ServingMetrics(model_name)).install(app)
    if auth is not None:
        auth.install(app)
    state = {"ready": ready}

    def model_entry() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "owned_by": "nexa", "created": 0}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods answer in the protocol's own error shape.
        if request.url.path.startswith("/v2"):
            return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _openai_error(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_entry()]}

    @app.get("/v1/models/{name:path}", response_model=None)
    def retrieve_model(name: str) -> Any:
        return model_entry() if name == model_name else _unknown_model(name, model_name)

    async def _body(request: Request, model: type[CompletionRequest] | type[ChatRequest]) -> Any:
        try:
            raw = await request.json()
        except ValueError:
            return _openai_error(400, "The body is not valid JSON.")
        try:
            body = model.model_validate(raw)
        except ValidationError as exc:
            return _openai_error(400, _plain(exc))
        if body.model and body.model != model_name:
            return _unknown_model(body.model, model_name)
        return body

    def _seed(seed: int | None, i: int) -> int | None:
        # n samples of one seeded request differ from each other, and repeat on the next call.
        return None if seed is None else seed + i

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await _body(request, CompletionRequest)
        if isinstance(body, JSONResponse):
            return body
        prompts = body.prompts()
        n = body.n or 1
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        wants_scores = bool(body.echo) or body.logprobs is not None
        if (wants_scores or any(not isinstance(p, str) for p in prompts)) and tokens is None:
            return _openai_error(400, "this server cannot take token ids, echo or logprobs")
        if max_tokens == 0 and not body.echo:
            return _openai_error(400, "max_tokens: 0 is only allowed with echo", param="max_tokens")
        if body.stream and (wants_scores or max_tokens == 0):
            return _openai_error(400, "echo and logprobs are not available when streaming", param="stream")
        requests = [
            GenerationRequest(
                prompt=p if isinstance(p, str) else "",
                prompt_ids=None if isinstance(p, str) else p,
                max_tokens=max(1, max_tokens),
                temperature=body.temperature if body.temperature is not None else 1.0,
                top_p=body.top_p or 1.0,
                stop=stops(body.stop),
                seed=_seed(body.seed, i),
            )
            for p in prompts
            for i in range(n)
        ]
        if max_tokens == 0:
            assert tokens is not None
            results = [tokens.nothing_generated(r) for r in requests]
        else:
            tickets = [scheduler.submit(r) for r in requests]
            if body.stream:
                return StreamingResponse(
                    _completion_stream(tickets, include_usage=_usage_wanted(body)),
                    media_type="text/event-stream",
                )
            try:
                results = [await _wait(t) for t in tickets]
            except RuntimeError as exc:
                return _openai_error(500, str(exc), "server_error")
        if not wants_scores:
            return completion_body(model_name, results)
        assert tokens is not None
        texts, logprobs = [], []
        for request_, result in zip(requests, results, strict=True):
            text, scored = await asyncio.to_thread(
                tokens.completion_logprobs, request_, result, echo=bool(body.echo), top=body.logprobs or 0
            )
            texts.append(text)
            logprobs.append(scored if body.logprobs is not None else None)
        return completion_body(model_name, results, texts, logprobs)

    async def _completion_stream(tickets: list[Ticket], *, include_usage: bool) -> AsyncIterator[str]:
        response_id = new_id("cmpl")
        done: list[GenerationResult] = []
        for index, ticket in enumerate(tickets):
            async for kind, value in _pieces(ticket):
                if kind == "token":
                    yield _sse(
                        _with_usage(
                            completion_chunk(response_id, model_name, value, None, index), include_usage
                        )
                    )
                elif kind == "done":
                    done.append(value)
                    chunk = completion_chunk(response_id, model_name, "", value.finish_reason, index)
                    yield _sse(_with_usage(chunk, include_usage))
                else:
                    yield _stream_failed(value)
                    return
        if include_usage:
            yield _sse(usage_chunk(response_id, model_name, "text_completion", done))
        yield _sse("[DONE]")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await _body(request, ChatRequest)
        if isinstance(body, JSONResponse):
            return body
        prompt = format_chat({"role": m.role, "content": m.text()} for m in body.messages)
        tickets = [
            scheduler.submit(
                GenerationRequest(
                    prompt=prompt,
                    max_tokens=body.budget(),
                    temperature=body.temperature if body.temperature is not None else 1.0,
                    top_p=body.top_p or 1.0,
                    stop=[*CHAT_STOPS, *stops(body.stop)],
                    seed=_seed(body.seed, i),
                )
            )
            for i in range(body.n or 1)
        ]
        if body.stream:
            return StreamingResponse(
                _chat_stream(tickets, include_usage=_usage_wanted(body)), media_type="text/event-stream"
            )
        try:
            results = [await _wait(t) for t in tickets]
        except RuntimeError as exc:
            return _openai_error(500, str(exc), "server_error")
        return chat_body(model_name, results)

    async def _chat_stream(tickets: list[Ticket], *, include_usage: bool) -> AsyncIterator[str]:
        response_id = new_id("chatcmpl")
        done: list[GenerationResult] = []
        for index, ticket in enumerate(tickets):
            trim = StreamTrim()
            first = chat_chunk(response_id, model_name, {"role": "assistant", "content": ""}, None, index)
            yield _sse(_with_usage(first, include_usage))
            async for kind, value in _pieces(ticket):
                if kind == "token":
                    text = trim.feed(value)
                    if text:
                        chunk = chat_chunk(response_id, model_name, {"content": text}, None, index)
                        yield _sse(_with_usage(chunk, include_usage))
                elif kind == "done":
                    done.append(value)
                    chunk = chat_chunk(response_id, model_name, {}, value.finish_reason, index)
                    yield _sse(_with_usage(chunk, include_usage))
                else:
                    yield _stream_failed(value)
                    return
        if include_usage:
            yield _sse(usage_chunk(response_id, model_name, "chat.completion.chunk", done))
        yield _sse("[DONE]")

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", response_model=None)
    def health_ready() -> Any:
        if not state["ready"]:
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/v2", response_model=None)
    def server_metadata() -> dict[str, Any]:
        return {
            "name": "nexa-serve",
            "version": "1",
            "extensions": ["binary_tensor_data", "model_configuration"],
        }

    @app.get("/v2/models/{name}", response_model=None)
    def metadata(name: str) -> Any:
        if name != model_name:
            return JSONResponse(
                {"error": f"unknown model {name!r}; this server serves {model_name!r}"}, status_code=404
            )
        return oip.model_metadata(model_name)

    @app.get("/v2/models/{name}/config", response_model=None)
    def config(name: str) -> Any:
        if name != model_name:
            return JSONResponse(
                {"error": f"unknown model {name!r}; this server serves {model_name!r}"}, status_code=404
            )
        return oip.model_config(model_name, scheduler.max_batch_size)

    @app.get("/v2/models/{name}/ready", response_model=None)
    def model_ready(name: str) -> Any:
        if name != model_name:
            return JSONResponse({"error": f"unknown model {name!r}"}, status_code=404)
        return {"name": name, "ready": bool(state["ready"])}

    @app.post("/v2/models/{name}/infer", response_model=None)
    async def infer(name: str, request: Request) -> Any:
        if name != model_name:
            return JSONResponse(
                {"error": f"unknown model {name!r}; this server serves {model_name!r}"}, status_code=404
            )
        try:
            header, binary = oip.split_body(await request.body(), request.headers.get(oip.HEADER_LENGTH))
            call = oip.parse_infer_request(header, binary=binary)
        except oip.InferenceRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        tickets = [scheduler.submit(r) for r in call.requests]
        try:
            results = [await _wait(t) for t in tickets]
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        body, header_length = oip.infer_response(model_name, call, results)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={oip.HEADER_LENGTH: str(header_length)},
        )

    @app.get("/nexa/stats")
    def stats() -> dict[str, Any]:
        return {"batching": scheduler.stats.as_dict(), "max_batch_size": scheduler.max_batch_size}

    return app
