"""Open Inference Protocol (KServe v2) for text models: request and response mapping.

A request names one BYTES input (``text_input``, or the only input) holding the
prompts, optional ``max_tokens`` / ``temperature`` / ``top_p`` / ``stop`` in
``parameters``; the response holds ``text_output`` (BYTES) and
``completion_tokens`` (INT64), both shaped like the input.

The binary tensor data extension (what ``tritonclient`` sends by default) is
spoken both ways: a body whose first ``Inference-Header-Content-Length`` bytes
are the JSON header and the rest the tensors an input's
``parameters.binary_data_size`` points into (BYTES elements each a 4-byte
little-endian length and the bytes); outputs asked for with
``parameters.binary_data`` (or all, with the request's ``binary_data_output``)
come back the same way.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
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


OUTPUTS = ("text_output", "completion_tokens")
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class InferCall:
    """One infer request, read: what to generate, and how the answer must be shaped and encoded."""

    request_id: str | None
    requests: list[GenerationRequest]
    shape: list[int]
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    binary: set[str] = field(default_factory=set)


def split_body(raw: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(JSON header, binary section) of an infer body; the whole body is JSON without the header."""
    if header_length is None:
        try:
            return json.loads(raw), b""
        except ValueError as exc:
            raise InferenceRequestError(f"the body is not JSON: {exc}") from exc
    try:
        size = int(header_length)
    except ValueError as exc:
        raise InferenceRequestError(f"{HEADER_LENGTH} must be a number") from exc
    if not 0 < size <= len(raw):
        raise InferenceRequestError(f"{HEADER_LENGTH} {size} does not fit the {len(raw)}-byte body")
    try:
        return json.loads(raw[:size]), raw[size:]
    except ValueError as exc:
        raise InferenceRequestError(f"the JSON header is not JSON: {exc}") from exc


def _bytes_elements(data: bytes, name: str) -> list[str]:
    out, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise InferenceRequestError(f"input {name!r}: a BYTES element's length is cut short")
        (size,) = struct.unpack_from("<I", data, at)
        at += 4
        if at + size > len(data):
            raise InferenceRequestError(f"input {name!r}: a BYTES element runs past its data")
        try:
            out.append(data[at : at + size].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InferenceRequestError(f"input {name!r}: a prompt is not UTF-8") from exc
        at += size
    return out


def _binary_slices(inputs: list[Any], binary: bytes) -> dict[int, bytes]:
    """Each input's share of the binary section, in input order."""
    slices, at = {}, 0
    for index, item in enumerate(inputs):
        size = ((item.get("parameters") or {}) if isinstance(item, dict) else {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or at + size > len(binary):
            raise InferenceRequestError("binary_data_size does not match the binary data sent")
        slices[index] = binary[at : at + size]
        at += size
    if at != len(binary):
        raise InferenceRequestError("the body holds binary data no input claims")
    return slices


def parse_infer_request(body: Any, *, default_max_tokens: int = 64, binary: bytes = b"") -> InferCall:
    """What an OIP v2 infer body asks for; ``InferenceRequestError`` names what is malformed."""
    if not isinstance(body, dict):
        raise InferenceRequestError("the body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferenceRequestError("'inputs' must be a non-empty list")
    slices = _binary_slices(inputs, binary)
    index = next(
        (n for n, i in enumerate(inputs) if isinstance(i, dict) and i.get("name") == "text_input"), None
    )
    if index is None:
        if len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise InferenceRequestError("name the prompt input 'text_input'")
        index = 0
    chosen = inputs[index]
    if chosen.get("datatype") not in ("BYTES", None):
        raise InferenceRequestError(f"input {chosen.get('name')!r} must have datatype BYTES")
    if index in slices:
        prompts: list[Any] = _bytes_elements(slices[index], str(chosen.get("name")))
    else:
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
    call = InferCall(
        str(request_id) if request_id is not None else None,
        requests,
        list(shape) if isinstance(shape, list) else [len(prompts)],
    )
    asked = body.get("outputs")
    if asked is not None:
        if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
            raise InferenceRequestError("'outputs' must be a list of objects")
        names = [str(o.get("name")) for o in asked]
        unknown = [n for n in names if n not in OUTPUTS]
        if unknown:
            raise InferenceRequestError(f"unknown output {unknown[0]!r}; this model has {', '.join(OUTPUTS)}")
        call.outputs = names
        call.binary = {str(o["name"]) for o in asked if (o.get("parameters") or {}).get("binary_data")}
    elif (body.get("parameters") or {}).get("binary_data_output"):
        call.binary = set(OUTPUTS)
    return call


def _product(shape: Sequence[Any]) -> int:
    total = 1
    for dim in shape:
        if not isinstance(dim, int) or dim < 0:
            return -1
        total *= dim
    return total


def infer_response(
    model_name: str, call: InferCall, results: Sequence[GenerationResult]
) -> tuple[bytes, int | None]:
    """The OIP v2 response body for ``results``, and the JSON header's length when binary data follows."""
    values: dict[str, tuple[str, list[Any]]] = {
        "text_output": ("BYTES", [r.text for r in results]),
        "completion_tokens": ("INT64", [r.completion_tokens for r in results]),
    }
    outputs, tail = [], b""
    for name in call.outputs:
        datatype, data = values[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": call.shape}
        if name in call.binary:
            raw = _encode(datatype, data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail += raw
        else:
            entry["data"] = data
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "outputs": outputs}
    if call.request_id is not None:
        body["id"] = call.request_id
    header = json.dumps(body).encode()
    return (header + tail, len(header)) if tail else (header, None)


def _encode(datatype: str, data: list[Any]) -> bytes:
    if datatype == "INT64":
        return struct.pack(f"<{len(data)}q", *data)
    return b"".join(struct.pack("<I", len(b)) + b for b in (str(d).encode() for d in data))


def model_config(model_name: str, max_batch_size: int) -> dict[str, Any]:
    """``GET /v2/models/{name}/config``: the model's configuration in Triton's terms (what tritonclient reads)."""
    return {
        "name": model_name,
        "platform": "pytorch",
        "backend": "nexa",
        "max_batch_size": 0,
        "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [
            {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "completion_tokens", "data_type": "TYPE_INT64", "dims": [-1]},
        ],
        "parameters": {"decode_batch_size": {"string_value": str(max_batch_size)}},
    }


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
