"""Every string, list and map a job spec accepts has a size limit.

Without one a single submission can store megabytes that every job listing then
returns. The check walks the JSON schema the contracts generate (the same one
the CRDs and OpenAPI carry), so a new unbounded field fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nexa.contracts import JOB_SPECS


def _unbounded(schema: dict[str, Any], defs: dict[str, Any], where: str, seen: set[str]) -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        return _unbounded(defs[name], defs, where, seen | {name})
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found += _unbounded(option, defs, where, seen)
    kind = schema.get("type")
    # A file part (binary content) is bounded by the upload limit, not by the schema.
    binary = schema.get("format") == "binary" or "contentMediaType" in schema
    exempt = "enum" in schema or "const" in schema or binary
    if kind == "string" and "maxLength" not in schema and not exempt:
        found.append(f"{where}: string without maxLength")
    if kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: list without maxItems")
        found += _unbounded(schema.get("items", {}), defs, f"{where}[]", seen)
    if kind == "object":
        for name, sub in schema.get("properties", {}).items():
            found += _unbounded(sub, defs, f"{where}.{name}", seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                found.append(f"{where}: map without maxProperties")
            found += _unbounded(extra, defs, f"{where}{{value}}", seen)
            found += _unbounded(
                schema.get("propertyNames", {"type": "string"}), defs, f"{where}{{key}}", seen
            )
    return found


@pytest.mark.parametrize("job_type", list(JOB_SPECS), ids=[t.value for t in JOB_SPECS])
def test_every_field_of_a_job_spec_is_bounded(job_type: Any) -> None:
    schema = JOB_SPECS[job_type].model_json_schema()
    problems = _unbounded(schema, schema.get("$defs", {}), job_type.value, set())
    assert problems == []


def test_the_walk_finds_an_unbounded_field() -> None:
    from pydantic import BaseModel

    class Loose(BaseModel):
        names: list[str]
        extra: dict[str, str]

    schema = Loose.model_json_schema()
    assert sorted(_unbounded(schema, {}, "x", set())) == [
        "x.extra: map without maxProperties",
        "x.extra{key}: string without maxLength",
        "x.extra{value}: string without maxLength",
        "x.names: list without maxItems",
        "x.names[]: string without maxLength",
    ]


def test_every_request_body_and_query_of_the_api_is_bounded(tmp_path: Path) -> None:
    from nexa_gateway.main import create_app
    from nexa_gateway.settings import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'n.db'}", artifact_root=tmp_path / "a"))
    spec = app.openapi()
    defs = spec["components"]["schemas"]
    problems: list[str] = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for media in operation.get("requestBody", {}).get("content", {}).values():
                problems += _unbounded(media.get("schema", {}), defs, where, set())
            for parameter in operation.get("parameters", []):
                problems += _unbounded(
                    parameter.get("schema", {}), defs, f"{where} ?{parameter['name']}", set()
                )
    assert problems == []
