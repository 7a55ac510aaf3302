"""Native per-row text statistics equal the slow reference on random and adversarial text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexa_engines import kernels
from nexa_engines import kernels_reference as ref

pytestmark = pytest.mark.skipif(not kernels.NATIVE, reason="nexa_kernels is not built (make kernels)")

PIECES = [
    "word",
    "Word",
    "WORD",
    "ΣΊΣΥΦΟΣ",
    "İ",
    "ß",
    "é",
    "é",
    "\u00a0",
    "\u2028",
    "\r\n",
    "\r",
    "\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\t",
    " ",
    "  ",
    "\x00",
    "\x07",
    "\ufffd",
    "\ue000",
    "数据",
    "٣",
    "🙂",
    "aaaa",
]
texts_st = st.lists(
    st.one_of(st.none(), st.text(max_size=80), st.lists(st.sampled_from(PIECES), max_size=50).map("".join)),
    max_size=20,
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_matrix(rows: list[str | bytes | None]) -> list[list[int]]:
    return [[ref.text_stats(r)[name] for name in kernels.TEXT_STAT_FIELDS] for r in rows]


@FAST
@given(texts=texts_st)
def test_stats_match_the_reference(texts: list[str | None]) -> None:
    got = kernels.text_stats(pa.array(texts, type=pa.string()))
    assert got.matrix.tolist() == reference_matrix(list(texts))


@FAST
@given(rows=st.lists(st.one_of(st.none(), st.binary(max_size=60)), max_size=20))
def test_binary_rows_with_invalid_utf8_decode_with_replacement(rows: list[bytes | None]) -> None:
    got = kernels.text_stats(pa.array(rows, type=pa.large_binary()))
    assert got.matrix.tolist() == reference_matrix(list(rows))


def test_named_columns_and_a_huge_row() -> None:
    huge = "spam eggs\n" * 200_000
    stats = kernels.text_stats(pa.chunked_array([pa.array(["", None]), pa.array([huge])]))
    assert len(stats) == 3
    assert stats["lines"].tolist() == [0, 0, 200_000]
    assert stats["repeated_line_chars"][2] == 9 * 199_999
    assert stats["unique_word_trigrams"][2] == 2
    assert stats["chars"][2] == len(huge)
    with pytest.raises(KeyError, match="known"):
        stats["nope"]


def test_the_audit_repetition_rule_reads_off_the_statistics() -> None:
    from nexa_engines.audit.heuristics import is_repetitive

    texts = [
        "one line\n" * 5 + "another",
        " ".join(["buy now"] * 20),
        "a normal sentence with enough different words to pass the trigram rule easily",
        "x" * 30 + " tail",
    ]
    s = kernels.text_stats(pa.array(texts))
    lines = (s["nonempty_lines"] >= 3) & (s["repeated_line_chars"] > 0.5 * np.maximum(1, s["line_chars"]))
    trigrams = (s["words"] >= 12) & (s["unique_word_trigrams"] < 0.5 * s["word_trigrams"])
    runs = (s["longest_char_run"] >= 20) & (s["longest_char_run"] >= 0.3 * s["chars"])
    assert ((s["chars"] >= 20) & (lines | trigrams | runs)).tolist() == [is_repetitive(t) for t in texts]
