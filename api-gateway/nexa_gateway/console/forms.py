"""A JSON schema (a contract's ``model_json_schema()``) as an HTML form, and the form's answer as the
request body: one generic renderer, so every job type's form comes from its contract.

Handled: strings, integers, numbers, booleans, enums, optional (``anyOf [X, null]``) fields, lists of
scalars (one item a line), string maps such as labels (``key=value`` a line) and nested objects (a
fieldset). Anything else is a JSON text box. Values the form cannot convert are sent as written, so
the API's own validation message is what the user sees.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Fields that name a dataset get a picker fed by GET /v1/datasets.
DATASET_FIELDS = frozenset({"dataset_uri", "dataset_id"})


@dataclass
class FormField:
    """One input: ``name`` is its dotted path in the body (``resources.cpu``)."""

    name: str
    label: str
    kind: str  # text | integer | number | checkbox | select | lines | pairs | json | group
    required: bool = False
    description: str = ""
    default: str = ""
    options: list[str] = field(default_factory=list)
    children: list[FormField] = field(default_factory=list)
    minimum: Any = None
    maximum: Any = None
    max_length: int | None = None
    datalist: str | None = None

    @property
    def input_id(self) -> str:
        return "f-" + self.name.replace(".", "-")


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved = schema.get("$defs", {}).get(ref[len("#/$defs/") :], {})
        return {**resolved, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _non_null(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    """``anyOf [X, null]`` → X (with the outer description and default)."""
    node = _resolve(schema, node)
    options = node.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if o.get("type") != "null"]
        if len(real) == 1:
            outer = {k: v for k, v in node.items() if k != "anyOf"}
            return {**_resolve(schema, real[0]), **outer}
    return node


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _field(schema: Mapping[str, Any], name: str, node: Mapping[str, Any], required: bool) -> FormField:
    node = _non_null(schema, node)
    label = str(node.get("title") or name.rsplit(".", 1)[-1].replace("_", " ").capitalize())
    common: dict[str, Any] = {
        "name": name,
        "label": label,
        "required": required,
        "description": str(node.get("description", "")),
        "default": _default_text(node.get("default")),
    }
    kind = node.get("type")
    if "enum" in node:
        return FormField(kind="select", options=[str(o) for o in node["enum"]], **common)
    if kind == "boolean":
        return FormField(kind="checkbox", **common)
    if kind in ("integer", "number"):
        return FormField(
            kind=str(kind),
            minimum=node.get("minimum", node.get("exclusiveMinimum")),
            maximum=node.get("maximum", node.get("exclusiveMaximum")),
            **common,
        )
    if kind == "string":
        leaf = name.rsplit(".", 1)[-1]
        return FormField(
            kind="text",
            max_length=node.get("maxLength"),
            datalist="datasets" if leaf in DATASET_FIELDS else None,
            **common,
        )
    if kind == "array":
        items = _non_null(schema, node.get("items", {}))
        if items.get("type") in ("string", "integer", "number"):
            return FormField(kind="lines", **common)
    if kind == "object" or "properties" in node:
        props = node.get("properties")
        if isinstance(props, dict) and props:
            # A nested field is required only when its group is: an optional judge stays optional.
            inner_required = set(node.get("required", [])) if required else set()
            children = [
                _field(schema, f"{name}.{key}", sub, key in inner_required) for key, sub in props.items()
            ]
            return FormField(kind="group", children=children, **common)
        return FormField(kind="pairs", **common)
    return FormField(kind="json", **common)


def fields_from_schema(schema: Mapping[str, Any]) -> list[FormField]:
    """The form's top-level fields, required ones first (the rest are options)."""
    required = set(schema.get("required", []))
    fields = [
        _field(schema, key, node, key in required) for key, node in schema.get("properties", {}).items()
    ]
    return sorted(fields, key=lambda f: not f.required)


def _convert(f: FormField, raw: str) -> Any:
    text = raw.strip()
    if f.kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text  # the API says why it is not a number
    if f.kind == "number":
        try:
            return float(text)
        except ValueError:
            return text
    if f.kind == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if f.kind == "pairs":
        pairs: dict[str, str] = {}
        for line in text.splitlines():
            if line.strip():
                key, _, value = line.partition("=")
                pairs[key.strip()] = value.strip()
        return pairs
    if f.kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def body_from_form(fields: list[FormField], form: Mapping[str, str]) -> dict[str, Any]:
    """The request body the submitted form describes; empty and default fields are left to the API."""
    body: dict[str, Any] = {}
    for f in fields:
        key = f.name.rsplit(".", 1)[-1]
        if f.kind == "group":
            inner = body_from_form(f.children, form)
            if inner:
                body[key] = inner
        elif f.kind == "checkbox":
            checked = f.name in form
            if checked != (f.default == "true"):
                body[key] = checked
        else:
            raw = form.get(f.name, "").strip()
            # A value left at its default is the API's to fill: an untouched optional group (a judge)
            # is then not sent at all.
            if raw and raw != f.default.strip():
                body[key] = _convert(f, raw)
    return body
