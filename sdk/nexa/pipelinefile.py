"""Pipeline files: a ``PipelineSpec`` written as YAML or JSON, read with errors that name the field.

::

    name: nightly
    parameters:
      data: ds_…
    steps:
      - name: audit
        type: audit
        spec: {dataset_uri: "{params.data}"}
        gate: {min_quality_tier: B}
      - name: train
        type: train
        spec: {dataset_id: "{steps.audit.outputs.dataset_id}", model: Qwen/Qwen2.5-0.5B}

JSON is always read. YAML needs PyYAML, which is not a dependency of the SDK: a ``.yaml`` file
without it is a ``PipelineFileError`` saying so (``pip install pyyaml``, or write the file as JSON).

Every problem is a ``PipelineFileError`` (a ``ValueError``) whose ``problems`` name the file and
the field, such as ``steps[1] (train).spec.epochs: …``; nothing here raises anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nexa.contracts.pipelines import PipelineSpec
from nexa.errors import PipelineFileError

__all__ = ["load_pipeline", "parse_pipeline", "pipeline_request", "read_pipeline_file", "with_parameters"]

YAML_SUFFIXES = (".yaml", ".yml")
# Far above any pipeline (32 steps of a few fields each); stops a wrong path (a dataset) early.
MAX_FILE_BYTES = 4 * 1024 * 1024

SPEC_SOURCE = "pipeline spec"


def read_pipeline_file(path: str | Path) -> dict[str, Any]:
    """The mapping a pipeline file holds (YAML or JSON by its suffix; other suffixes: JSON, then YAML)."""
    file = Path(path).expanduser()
    source = str(path)
    try:
        size = file.stat().st_size
        if file.is_dir():
            raise PipelineFileError(source, ["is a directory, not a pipeline file"])
        if size > MAX_FILE_BYTES:
            raise PipelineFileError(
                source, [f"is {size:,} bytes; a pipeline file is at most {MAX_FILE_BYTES:,}"]
            )
        raw = file.read_bytes()
    except FileNotFoundError:
        raise PipelineFileError(source, ["no such file"]) from None
    except PermissionError:
        raise PipelineFileError(source, ["permission denied"]) from None
    except OSError as exc:
        raise PipelineFileError(source, [f"cannot read it: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineFileError(source, [f"not UTF-8 text (byte {exc.start})"]) from None
    suffix = file.suffix.lower()
    if suffix == ".json":
        data = _json(text, source)
    elif suffix in YAML_SUFFIXES:
        data = _yaml(text, source)
    else:
        try:
            data = json.loads(text)
        except ValueError:
            data = _yaml(text, source)
    if not isinstance(data, dict):
        found = "nothing" if data is None else f"a {type(data).__name__}"
        raise PipelineFileError(
            source, [f"expected a mapping with `name` and `steps` at the top, found {found}"]
        )
    return data


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineFileError(source, [f"line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None


def _yaml(text: str, source: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise PipelineFileError(
            source,
            [
                "reading YAML needs PyYAML, which is not installed: `pip install pyyaml`, or write the pipeline as JSON"
            ],
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "not valid YAML"
        raise PipelineFileError(source, [f"{where}{problem}"]) from None
    except yaml.YAMLError as exc:
        raise PipelineFileError(source, [f"not valid YAML: {exc}"]) from None


def _parameter_text(value: Any) -> Any:
    """A parameter written bare in YAML (``epochs: 3``, ``fast: true``) as the text it stands for."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | date):
        return value.isoformat() if isinstance(value, date) else str(value)
    return value


def with_parameters(
    data: Mapping[str, Any], parameters: Mapping[str, str] | None, source: str
) -> dict[str, Any]:
    """``data`` (a pipeline as a mapping) with ``parameters`` set over its own.

    A name the pipeline does not declare under ``parameters`` is an error: it is almost always a typo,
    and a placeholder can only name a declared parameter.
    """
    result = dict(data)
    declared = result.get("parameters")
    if declared is None:
        declared = {}
    if isinstance(declared, Mapping):
        declared = {k: _parameter_text(v) for k, v in declared.items()}
        result["parameters"] = declared
    if not parameters:
        return result
    if not isinstance(declared, Mapping):
        return result  # validation reports the malformed `parameters`
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        known = ", ".join(sorted(str(k) for k in declared)) or "none"
        raise PipelineFileError(
            source,
            [
                f"parameter {name!r} is not declared under `parameters` (declared: {known})"
                for name in unknown
            ],
        )
    result["parameters"] = {**declared, **{k: str(v) for k, v in parameters.items()}}
    return result


def _location(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``('steps', 1, 'spec', 'epochs')`` as ``steps[1] (train).spec.epochs``."""
    text = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("name"), str):
                text += f" ({node['name']})"
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return text


def _problems(exc: ValidationError, data: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid"))
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "value_error":
            message = message.removeprefix("Value error, ")
        if not loc and err.get("type") == "value_error":
            problems.extend(message.split("; "))  # the planner's problems, each naming its step
            continue
        where = _location(loc, data)
        problems.append(f"{where}: {message}" if where else message)
    return problems


def parse_pipeline(
    data: Mapping[str, Any], parameters: Mapping[str, str] | None = None, *, source: str = SPEC_SOURCE
) -> PipelineSpec:
    """``data`` as a ``PipelineSpec`` with ``parameters`` set over its own; checked like the gateway checks it."""
    merged = with_parameters(data, parameters, source)
    try:
        return PipelineSpec.model_validate(merged)
    except ValidationError as exc:
        raise PipelineFileError(source, _problems(exc, merged)) from None


def load_pipeline(path: str | Path, parameters: Mapping[str, str] | None = None) -> PipelineSpec:
    """Read and check a pipeline file; ``parameters`` override the file's ``parameters``.

    Raises ``PipelineFileError`` naming the file and every problem (the field of each).
    """
    return parse_pipeline(read_pipeline_file(path), parameters, source=str(path))


def pipeline_request(
    spec: PipelineSpec | Mapping[str, Any] | str | Path, parameters: Mapping[str, str] | None = None
) -> PipelineSpec | dict[str, Any]:
    """What ``NexaClient.pipeline`` sends for ``spec``: a file is read and checked; a ``PipelineSpec``
    is checked again with ``parameters`` set; a dict is sent as it is (with ``parameters`` set), so the
    gateway, which may know newer fields, is the one to judge it."""
    if isinstance(spec, str | Path):
        return load_pipeline(spec, parameters)
    if isinstance(spec, PipelineSpec):
        if not parameters:
            return spec
        return parse_pipeline(spec.model_dump(mode="json", exclude_unset=True), parameters)
    if isinstance(spec, Mapping):
        return with_parameters(spec, parameters, SPEC_SOURCE)
    raise TypeError(f"spec must be a PipelineSpec, a dict or a file path, not {type(spec).__name__}")
