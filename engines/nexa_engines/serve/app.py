"""The serving HTTP app: OpenAI API (``/v1``) and Open Inference Protocol v2 (``/v2``) over one batcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from nexa_engines.models.generation import GenerationRequest, GenerationResult
from nexa_engines.models.prompt import clean_completion, format_chat
from nexa_engines.serve import oip
from nexa_engines.serve.auth import EndpointAuth
from nexa_engines.serve.batcher import BatchScheduler, Ticket
from nexa_engines.serve.metrics import ServingMetrics
from nexa_engines.serve.openai_api import (
    CHAT_STOPS,
    ChatRequest,
    CompletionRequest,
    chat_body,
    chat_chunk,
    completion_body,
    completion_chunk,
    new_id,
    stops,
)


def _openai_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status
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


def create_app(
    scheduler: BatchScheduler,
    model_name: str,
    *,
    ready: bool = True,
    metrics: ServingMetrics | None = None,
    auth: EndpointAuth | None = None,
) -> FastAPI:
    """The FastAPI app serving ``model_name`` through ``scheduler``, with Prometheus metrics at ``/metrics``."""
    app = FastAPI(title=f"Nexa serving: {model_name}", docs_url=None, redoc_url=None)
    (metrics or ServingMetrics(model_name)).install(app)
    if auth is not None:
        auth.install(app)
    state = {"ready": ready}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "owned_by": "nexa", "created": 0}],
        }

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        try:
            body = CompletionRequest.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return _openai_error(400, str(exc))
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            return _openai_error(400, "prompt must not be empty")
        tickets = [
            scheduler.submit(
                GenerationRequest(
                    prompt=p,
                    max_tokens=body.max_tokens or 16,
                    temperature=body.temperature if body.temperature is not None else 1.0,
                    top_p=body.top_p or 1.0,
                    stop=stops(body.stop),
                    seed=body.seed,
                )
            )
            for p in prompts
        ]
        if body.stream:
            if len(tickets) != 1:
                return _openai_error(400, "streaming supports one prompt per request")
            response_id = new_id("cmpl")

            async def stream() -> AsyncIterator[str]:
                async for kind, value in _pieces(tickets[0]):
                    if kind == "token":
                        yield _sse(completion_chunk(response_id, model_name, value, None))
                    elif kind == "done":
                        yield _sse(completion_chunk(response_id, model_name, "", value.finish_reason))
                    else:
                        yield _sse({"error": {"message": str(value), "type": "server_error"}})
                yield _sse("[DONE]")

            return StreamingResponse(stream(), media_type="text/event-stream")
        try:
            results = [await _wait(t) for t in tickets]
        except RuntimeError as exc:
            return _openai_error(500, str(exc), "server_error")
        return completion_body(model_name, results)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        try:
            body = ChatRequest.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return _openai_error(400, str(exc))
        prompt = format_chat({"role": m.role, "content": m.text()} for m in body.messages)
        ticket = scheduler.submit(
            GenerationRequest(
                prompt=prompt,
                max_tokens=body.budget(),
                temperature=body.temperature if body.temperature is not None else 1.0,
                top_p=body.top_p or 1.0,
                stop=[*CHAT_STOPS, *stops(body.stop)],
                seed=body.seed,
            )
        )
        if body.stream:
            response_id = new_id("chatcmpl")

            async def stream() -> AsyncIterator[str]:
                yield _sse(chat_chunk(response_id, model_name, {"role": "assistant", "content": ""}, None))
                async for kind, value in _pieces(ticket):
                    if kind == "token":
                        yield _sse(chat_chunk(response_id, model_name, {"content": value}, None))
                    elif kind == "done":
                        yield _sse(chat_chunk(response_id, model_name, {}, value.finish_reason))
                    else:
                        yield _sse({"error": {"message": str(value), "type": "server_error"}})
                yield _sse("[DONE]")

            return StreamingResponse(stream(), media_type="text/event-stream")
        try:
            result = await _wait(ticket)
        except RuntimeError as exc:
            return _openai_error(500, str(exc), "server_error")
        return chat_body(model_name, result, clean_completion(result.text) or result.text.strip())

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
        return {"name": "nexa-serve", "version": "1", "extensions": []}

    @app.get("/v2/models/{name}", response_model=None)
    def metadata(name: str) -> Any:
        if name != model_name:
            return JSONResponse(
                {"error": f"unknown model {name!r}; this server serves {model_name!r}"}, status_code=404
            )
        return oip.model_metadata(model_name)

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
            request_id, requests = oip.parse_infer_request(await request.json())
        except (oip.InferenceRequestError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        tickets = [scheduler.submit(r) for r in requests]
        try:
            results = [await _wait(t) for t in tickets]
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        return oip.infer_response(model_name, request_id, results)

    @app.get("/nexa/stats")
    def stats() -> dict[str, Any]:
        return {"batching": scheduler.stats.as_dict(), "max_batch_size": scheduler.max_batch_size}

    return app
