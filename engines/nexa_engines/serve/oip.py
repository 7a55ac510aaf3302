"""Open Inference Protocol (KServe v2) for text models: request and response mapping.

A request names one BYTES input (``text_input``, or the only input) holding the
prompts, optional ``max_tokens`` / ``temperature`` / ``top_p`` / ``stop`` in
``parameters``; the response holds ``text_output`` (BYTES, same shape) and
``completion_tokens`` (INT64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nexa_engines.models.generation import GenerationRequest, GenerationResult


class InferenceRequestError(ValueError):
    """The request does not follow the protocol; the message says which part."""


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flatten(item))
        return out
    return [data]


def parse_infer_request(
    body: Any, *, default_max_tokens: int = 64
) -> tuple[str | None, list[GenerationRequest]]:
    """(request id, generation requests) from an OIP v2 infer body; ``InferenceRequestError`` when malformed."""
    if not isinstance(body, dict):
        raise InferenceRequestError("the body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferenceRequestError("'inputs' must be a non-empty list")
    chosen = next((i for i in inputs if isinstance(i, dict) and i.get("name") == "text_input"), None)
    if chosen is None:
        if len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise InferenceRequestError("name the prompt input 'text_input'")
        chosen = inputs[0]
    if chosen.get("datatype") not in ("BYTES", None):
        raise InferenceRequestError(f"input {chosen.get('name')!r} must have datatype BYTES")
    prompts = _flatten(chosen.get("data"))
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InferenceRequestError(f"input {chosen.get('name')!r}: 'data' must hold strings")
    shape = chosen.get("shape")
    if shape is not None and (not isinstance(shape, list) or _product(shape) != len(prompts)):
        raise InferenceRequestError(
            f"input {chosen.get('name')!r}: shape {shape} does not match {len(prompts)} items"
        )
    params = {**(body.get("parameters") or {}), **(chosen.get("parameters") or {})}
    try:
        max_tokens = int(params.get("max_tokens", default_max_tokens))
        temperature = float(params.get("temperature", 0.0))
        top_p = float(params.get("top_p", 1.0))
    except (TypeError, ValueError) as exc:
        raise InferenceRequestError(f"parameters: {exc}") from exc
    if not 1 <= max_tokens <= 4096 or not 0.0 <= temperature <= 2.0 or not 0.0 < top_p <= 1.0:
        raise InferenceRequestError(
            "parameters out of range: max_tokens 1..4096, temperature 0..2, top_p (0, 1]"
        )
    stop = params.get("stop") or []
    stops = [stop] if isinstance(stop, str) else [str(s) for s in stop]
    request_id = body.get("id")
    requests = [
        GenerationRequest(prompt=p, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stops)
        for p in prompts
    ]
    return (str(request_id) if request_id is not None else None), requests


def _product(shape: Sequence[Any]) -> int:
    total = 1
    for dim in shape:
        if not isinstance(dim, int) or dim < 0:
            return -1
        total *= dim
    return total


def infer_response(
    model_name: str, request_id: str | None, results: Sequence[GenerationResult]
) -> dict[str, Any]:
    """The OIP v2 response body for ``results``."""
    body: dict[str, Any] = {
        "model_name": model_name,
        "outputs": [
            {
                "name": "text_output",
                "datatype": "BYTES",
                "shape": [len(results)],
                "data": [r.text for r in results],
            },
            {
                "name": "completion_tokens",
                "datatype": "INT64",
                "shape": [len(results)],
                "data": [r.completion_tokens for r in results],
            },
        ],
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def model_metadata(model_name: str, platform: str = "pytorch") -> dict[str, Any]:
    """``GET /v2/models/{name}``: the model's inputs and outputs."""
    return {
        "name": model_name,
        "versions": ["1"],
        "platform": platform,
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "text_output", "datatype": "BYTES", "shape": [-1]},
            {"name": "completion_tokens", "datatype": "INT64", "shape": [-1]},
        ],
    }
