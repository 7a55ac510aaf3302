"""Which columns hold a row's text, and the text of each row.

Datasets name their text columns many ways (instruction/response, prompt/completion,
question/answer, input/output, chat `messages`, plain `text`). Detection picks them
from the schema; the user can name them instead with ``text_columns``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nexa_engines.engine import EngineError

MESSAGE_COLUMN_NAMES = ("messages", "conversations", "conversation", "chat", "dialogue", "turns")
MESSAGE_CONTENT_FIELDS = ("content", "value", "text")
MESSAGE_ROLE_FIELDS = ("role", "from", "speaker")
# Fields a row needs: blank ones make the row `empty`.
REQUIRED_TEXT_NAMES = (
    "instruction",
    "prompt",
    "question",
    "query",
    "input",
    "response",
    "output",
    "completion",
    "answer",
    "text",
    "content",
)
# Fields that are commonly blank on purpose (Alpaca's `input`, a missing system prompt).
OPTIONAL_TEXT_NAMES = ("system", "context")
# `input` is optional when an instruction accompanies it (the Alpaca layout).
_OPTIONAL_BESIDE_INSTRUCTION = ("input",)

FIELD_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class TextColumn:
    """One column that contributes to a row's text."""

    name: str
    kind: Literal["text", "messages", "messages_json"]
    required: bool


def _is_stringish(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_stringish(t.value_type)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _message_content_field(t: pa.DataType) -> str | None:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return None
    item = t.value_type
    if not pa.types.is_struct(item):
        return None
    names = [item.field(i).name for i in range(item.num_fields)]
    return next((f for f in MESSAGE_CONTENT_FIELDS if f in names), None)


def _message_role_field(t: pa.DataType) -> str | None:
    item = t.value_type
    names = [item.field(i).name for i in range(item.num_fields)]
    return next((f for f in MESSAGE_ROLE_FIELDS if f in names), None)


def detect_text_columns(schema: pa.Schema, requested: list[str] | None = None) -> list[TextColumn]:
    """The columns to audit, in schema order; raises EngineError naming the columns present."""
    present = ", ".join(f"{f.name} ({f.type})" for f in schema) or "none"
    if requested:
        missing = [name for name in requested if schema.get_field_index(name) < 0]
        if missing:
            raise EngineError(
                "text_columns_not_found",
                f"text_columns {missing} are not in the dataset; its columns are: {present}",
            )
        return [_column_for(schema.field(name), required=True) for name in requested]

    by_lower = {f.name.lower(): f for f in schema}
    for name in MESSAGE_COLUMN_NAMES:
        fld = by_lower.get(name)
        if fld is not None and (_message_content_field(fld.type) or _is_stringish(fld.type)):
            return [_column_for(fld, required=True, messages=True)]

    known = set(REQUIRED_TEXT_NAMES) | set(OPTIONAL_TEXT_NAMES)
    chosen = [f for f in schema if f.name.lower() in known and _is_stringish(f.type)]
    if not chosen:
        raise EngineError(
            "no_text_columns",
            "no text column found: expected instruction/response, prompt/completion, question/answer, "
            "input/output, messages, or text/content; set text_columns to name them. "
            f"The dataset's columns are: {present}",
        )
    lowered = {f.name.lower() for f in chosen}
    optional = set(OPTIONAL_TEXT_NAMES)
    if "instruction" in lowered:
        optional |= set(_OPTIONAL_BESIDE_INSTRUCTION)
    columns = [TextColumn(f.name, "text", f.name.lower() not in optional) for f in chosen]
    if not any(c.required for c in columns):
        columns = [TextColumn(c.name, c.kind, True) for c in columns]
    return columns


def _column_for(fld: pa.Field, *, required: bool, messages: bool = False) -> TextColumn:
    if _message_content_field(fld.type):
        return TextColumn(fld.name, "messages", required)
    if messages and _is_stringish(fld.type):
        return TextColumn(fld.name, "messages_json", required)
    return TextColumn(fld.name, "text", required)


def _as_text(values: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values if values.type == pa.large_string() else pc.cast(values, pa.large_string())


def _blank(values: pa.Array) -> np.ndarray:
    lengths = pc.utf8_length(pc.utf8_trim_whitespace(values)).fill_null(0)
    out: np.ndarray = np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64) == 0
    return out


def _messages_text(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each row's message contents joined by newlines, and whether any message is blank."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    content_field = _message_content_field(values.type)
    assert content_field is not None
    flat = values.flatten()  # respects slicing, drops null lists
    contents = _as_text(pc.struct_field(flat, content_field))
    parents = np.asarray(pc.list_parent_indices(values).to_numpy(zero_copy_only=False), dtype=np.int64)
    blank_any = np.zeros(len(values), dtype=bool)
    blank_items = _blank(contents)
    if parents.size:
        blank_any[parents[blank_items]] = True
    counts = np.bincount(parents, minlength=len(values)) if parents.size else np.zeros(len(values), int)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    filled = pc.fill_null(contents, "")
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), filled)
    joined = pc.binary_join(lists, pa.scalar("\n", pa.large_string()))
    return _as_text(joined), blank_any


def _messages_json_text(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Like `_messages_text` for a string column holding JSON lists (CSV files)."""
    texts: list[str] = []
    blank_any = np.zeros(len(values), dtype=bool)
    for i, raw in enumerate(_as_text(values).to_pylist()):
        contents = _json_contents(raw)
        if contents is None:
            texts.append(raw or "")
            continue
        blank_any[i] = any(not c.strip() for c in contents)
        texts.append("\n".join(contents))
    return pa.array(texts, type=pa.large_string()), blank_any


def _json_contents(raw: str | None) -> list[str] | None:
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(parsed, list) or not all(isinstance(m, dict) for m in parsed):
        return None
    out = []
    for message in parsed:
        content = next((message[k] for k in MESSAGE_CONTENT_FIELDS if k in message), "")
        out.append(content if isinstance(content, str) else json.dumps(content))
    return out


def column_text(batch: pa.RecordBatch, column: TextColumn) -> tuple[pa.Array, np.ndarray]:
    """One column's text per row and whether that column is blank (per the column's kind)."""
    values = batch.column(column.name)
    if column.kind == "messages":
        text, blank_item = _messages_text(values)
        return text, _blank(text) | blank_item
    if column.kind == "messages_json":
        text, blank_item = _messages_json_text(values)
        return text, _blank(text) | blank_item
    text = _as_text(values)
    return text, _blank(text)


@dataclass
class RowTexts:
    """A batch's audited text: the joined text, each column's own text, and blank required fields."""

    joined: pa.Array
    fields: list[pa.Array]
    empty_field: np.ndarray


def row_texts(batch: pa.RecordBatch, columns: list[TextColumn]) -> RowTexts:
    """The audited text of each row (fields joined by a blank line) and where a required field is blank."""
    parts: list[pa.Array] = []
    empty_field = np.zeros(batch.num_rows, dtype=bool)
    for column in columns:
        text, blank = column_text(batch, column)
        parts.append(text)
        if column.required:
            empty_field |= blank
    if len(parts) == 1:
        return RowTexts(pc.fill_null(parts[0], ""), parts, empty_field)
    joined = pc.binary_join_element_wise(
        *parts, pa.scalar(FIELD_SEPARATOR, pa.large_string()), null_handling="replace", null_replacement=""
    )
    return RowTexts(_as_text(joined), parts, empty_field)


def labeled_row_text(batch: pa.RecordBatch, columns: list[TextColumn], row: int) -> str:
    """One row's fields with their names (chat turns with their roles), for the judge's prompt."""
    sections = []
    for column in columns:
        value = batch.column(column.name)[row].as_py()
        if column.kind == "messages" and isinstance(value, list):
            role_field = _message_role_field(batch.schema.field(column.name).type)
            content_field = _message_content_field(batch.schema.field(column.name).type)
            turns = [
                f"{(m or {}).get(role_field, 'message') if role_field else 'message'}: "
                f"{(m or {}).get(content_field) or ''}"
                for m in value
            ]
            sections.append("\n".join(turns))
        elif column.kind == "messages_json":
            contents = _json_contents(value)
            sections.append("\n".join(contents) if contents is not None else str(value or ""))
        else:
            sections.append(f"[{column.name}]\n{'' if value is None else value}")
    return FIELD_SEPARATOR.join(sections)
