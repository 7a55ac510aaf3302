"""Per-row heuristics and text-column detection of the audit engine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from nexa_engines.audit.columns import detect_text_columns, labeled_row_text, row_texts
from nexa_engines.audit.heuristics import FLAG_BITS, compute_flags, flag_lists, is_repetitive, luhn_valid
from nexa_engines.engine import EngineError


def flags_of(text: str, *, min_chars: int = 1, max_chars: int = 100_000) -> set[str]:
    result = compute_flags(pa.array([text]), min_chars=min_chars, max_chars=max_chars)
    return {name for name, bit in FLAG_BITS.items() if result.flags[0] & bit}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The capital of France is Paris.", set()),
        ("What is 12 * 7?\n\n12 times 7 equals 84.", set()),
        ("def add(a, b):\n    return a + b  # sum of two numbers", set()),
        ("", {"empty"}),
        ("   \n\t ", {"empty"}),
        ("I don't know. " * 20, {"repetitive", "no_stop_words"}),  # 60 words, none of them a stop word
        ("\n".join(["Sorry, I cannot help with that."] * 6), {"repetitive"}),
        ("z" * 80, {"repetitive"}),
        ("#%&*@!^~|<>{}[]=+$" * 4, {"non_text"}),
        ("ok \x01\x02\x03\x04\x05\ufffd\ufffd\ufffd data", {"non_text"}),
        ("blob: " + "QUJDRGVmZ2gxMjM0NTY3ODkw" * 12, {"non_text"}),
        ("GATTACA" * 40, set()),  # a letters-only run is not an encoded blob
        ("Write to jane.doe@example.com for details.", {"pii"}),
        ("Call me at (415) 555-0199 tonight.", {"pii"}),
        ("Call me at 415-555-0199 tonight.", {"pii"}),
        ("My card is 4111 1111 1111 1111, expiring soon.", {"pii"}),
        ("Order number 4111 1111 1111 1112 shipped.", set()),  # fails Luhn
        ("The product is 1219326311126352690 exactly.", set()),  # no issuer prefix
        ("The server is at 192.168.10.4 on the LAN.", {"pii"}),
        ("Upgrade to version 1.2.3.4.5 today.", set()),
        ("SSN 123-45-6789 on file.", {"pii"}),
        ("Part 000-12-3456 is not a valid SSN.", set()),
        ("export OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx123456", {"pii"}),
        ("AWS key AKIAIOSFODNN7EXAMPLE leaked", {"pii"}),
        ("The year 2023-10-15 was busy with 1,234 tasks.", set()),
        # The Gopher filters judge rows of 20 words or more (50 for stop words).
        (
            " ".join(str(n * 37 % 1000) for n in range(25)) + " and the total is large",
            {"low_alpha_words", "word_length"},
        ),
        (
            "#ai #ml " * 3 + "the model of the year was trained with care and shipped to users " * 2,
            {"symbol_ratio"},
        ),
        ("- first item\n- second item\n- third item\n- fourth item", {"bullet_lines"}),
        ("We waited...\nand waited...\nthen it came.", {"ellipsis_lines"}),
        (
            "In 2023 the team shipped 14 releases, and the largest of them fixed the slow start that users had reported for months.",
            set(),
        ),
    ],
)
def test_heuristic_table(text: str, expected: set[str]) -> None:
    assert flags_of(text) == expected


def test_length_limits() -> None:
    assert flags_of("short", min_chars=10) == {"too_short"}
    assert flags_of("A perfectly fine sentence about apples.", max_chars=10) == {"too_long"}
    assert flags_of("", min_chars=10) == {"empty"}  # empty rows are not also too_short


def test_pii_kinds_are_reported() -> None:
    result = compute_flags(
        pa.array(["mail a@b.io", "nothing here", "call 212-555-0100 now"]), min_chars=1, max_chars=1000
    )
    assert result.pii_kinds["email"].tolist() == [True, False, False]
    assert result.pii_kinds["phone"].tolist() == [False, False, True]


def test_per_field_checks_catch_a_garbage_response_beside_a_clean_instruction() -> None:
    instruction = pa.array(["Please summarize the attached quarterly report for the board."])
    response = pa.array(["#%&*@!^~|<>{}[]=+$#%&*@!^~|<>{}[]=+$#%&"])
    joined = pa.array([instruction[0].as_py() + "\n\n" + response[0].as_py()])
    alone = compute_flags(joined, min_chars=1, max_chars=1000)
    per_field = compute_flags(joined, min_chars=1, max_chars=1000, fields=[instruction, response])
    assert not alone.flags[0] & FLAG_BITS["non_text"]
    assert per_field.flags[0] & FLAG_BITS["non_text"]


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_is_repetitive_leaves_ordinary_prose_alone() -> None:
    prose = (
        "The committee met on Tuesday to review the budget. Several members asked for more detail "
        "on travel costs, and the treasurer agreed to circulate a breakdown before the next meeting."
    )
    assert not is_repetitive(prose)


def test_flag_lists_keep_row_alignment() -> None:
    flags = np.array(
        [0, FLAG_BITS["pii"] | FLAG_BITS["empty"], 0, FLAG_BITS["near_duplicate"]], dtype=np.uint16
    )
    assert flag_lists(flags).to_pylist() == [[], ["empty", "pii"], [], ["near_duplicate"]]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["id", "instruction", "response"], ["instruction", "response"]),
        (["prompt", "completion", "label"], ["prompt", "completion"]),
        (["Question", "Answer"], ["Question", "Answer"]),
        (["input", "output"], ["input", "output"]),
        (["instruction", "input", "output"], ["instruction", "input", "output"]),
        (["id", "text"], ["text"]),
        (["content", "source"], ["content"]),
    ],
)
def test_detects_text_columns(names: list[str], expected: list[str]) -> None:
    schema = pa.schema([(n, pa.int64() if n in ("id", "label") else pa.string()) for n in names])
    assert [c.name for c in detect_text_columns(schema)] == expected


def test_alpaca_input_is_optional_beside_an_instruction() -> None:
    schema = pa.schema([("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())])
    required = {c.name: c.required for c in detect_text_columns(schema)}
    assert required == {"instruction": True, "input": False, "output": True}


def test_no_text_column_names_the_columns_present() -> None:
    schema = pa.schema([("id", pa.int64()), ("label", pa.string())])
    with pytest.raises(EngineError) as err:
        detect_text_columns(schema)
    assert err.value.code == "no_text_columns"
    assert "id (int64)" in err.value.message and "label (string)" in err.value.message


def test_requested_columns_must_exist() -> None:
    schema = pa.schema([("body", pa.string())])
    assert [c.name for c in detect_text_columns(schema, ["body"])] == ["body"]
    with pytest.raises(EngineError) as err:
        detect_text_columns(schema, ["nope"])
    assert err.value.code == "text_columns_not_found"


def test_messages_column_concatenates_contents() -> None:
    messages = [
        [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
        [{"role": "user", "content": "Question?"}, {"role": "assistant", "content": "  "}],
        None,
    ]
    batch = pa.RecordBatch.from_pydict({"id": [1, 2, 3], "messages": messages})
    columns = detect_text_columns(batch.schema)
    assert [(c.name, c.kind) for c in columns] == [("messages", "messages")]
    texts = row_texts(batch.slice(0, 3), columns)
    assert texts.joined.to_pylist() == ["Hi there\nHello!", "Question?\n  ", ""]
    assert texts.empty_field.tolist() == [False, True, True]
    assert labeled_row_text(batch, columns, 0) == "user: Hi there\nassistant: Hello!"


def test_messages_as_json_strings() -> None:
    raw = '[{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}]'
    batch = pa.RecordBatch.from_pydict({"messages": [raw, "not json at all"]})
    texts = row_texts(batch, detect_text_columns(batch.schema))
    assert texts.joined.to_pylist() == ["Ping\nPong", "not json at all"]


def test_sliced_messages_batch_keeps_alignment() -> None:
    messages = [[{"role": "user", "content": f"message {i}"}] for i in range(6)]
    batch = pa.RecordBatch.from_pydict({"messages": messages}).slice(2, 3)
    texts = row_texts(batch, detect_text_columns(batch.schema))
    assert texts.joined.to_pylist() == ["message 2", "message 3", "message 4"]
