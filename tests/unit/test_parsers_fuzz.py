"""Hostile input to every parser that sees outside bytes (RELIABILITY R12): a clean error, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexa.contracts import JOB_SPECS, spec_for
from nexa.ids import id_prefix, is_id, new_id
from nexa_gateway.errors import ApiError
from nexa_gateway.routes.jobs import parse_last_event_id
from nexa_gateway.services.jobs import decode_cursor, encode_cursor, parse_label_filters
from nexa_gateway.services.keys import generate_api_key, hash_key, well_formed
from nexa_store.base import IntegrityError
from nexa_store.hashing import parse_manifest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_manifest_parser_rejects_garbage_cleanly(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        parse_manifest(data, "ds_aaaaaaaaaaaaaaaaaaaaaaaaaa", "dataset")


@settings(max_examples=200)
@given(json_values)
def test_manifest_parser_rejects_wrong_json_shapes(value: object) -> None:
    with pytest.raises(IntegrityError):
        parse_manifest(json.dumps(value).encode(), "ds_aaaaaaaaaaaaaaaaaaaaaaaaaa", "dataset")


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_key_checks_never_raise(text: str) -> None:
    assert well_formed(text) in (True, False)
    assert well_formed(text, prefix="nexaw_") in (True, False)
    assert len(hash_key(text)) == 64


@given(st.integers(min_value=0, max_value=37), st.characters(codec="ascii"))
def test_any_single_character_change_breaks_a_key(position: int, replacement: str) -> None:
    key = generate_api_key()
    index = 5 + position
    if key[index] == replacement:
        return
    mutated = key[:index] + replacement + key[index + 1 :]
    assert not well_formed(mutated)


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_last_event_id_is_a_number_or_a_400(raw: str) -> None:
    try:
        value = parse_last_event_id(raw)
    except ApiError as exc:
        assert exc.status_code == 400
    else:
        assert value >= 0


@settings(max_examples=300)
@given(st.text(max_size=120))
def test_cursors_decode_or_answer_400(raw: str) -> None:
    try:
        decode_cursor(raw)
    except ApiError as exc:
        assert exc.status_code == 400 and exc.field == "cursor"


def test_cursor_round_trip() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "job_x")) == (at, "job_x")


@settings(max_examples=200)
@given(st.lists(st.text(max_size=20), max_size=5))
def test_label_filters_parse_or_answer_422(raw: list[str]) -> None:
    try:
        parsed = parse_label_filters(raw)
    except ApiError as exc:
        assert exc.status_code == 422 and exc.field == "label"
    else:
        assert len(parsed) <= len(raw)


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(t.value for t in JOB_SPECS)),
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
)
def test_job_specs_validate_or_raise_validation_errors(job_type: str, payload: dict[str, object]) -> None:
    from pydantic import ValidationError

    try:
        spec_for(job_type, payload)
    except ValidationError:
        pass


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_id_checks_never_raise(text: str) -> None:
    assert is_id(text) in (True, False)
    assert id_prefix(text) is None or is_id(text)


def test_new_ids_are_well_formed_and_distinct() -> None:
    ids = {new_id("job") for _ in range(1000)}
    assert len(ids) == 1000 and all(is_id(i, "job") for i in ids)
