"""The fused ASCII normalize+hash kernel and the regex prefilter agree with pyarrow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexa_engines import kernels
from nexa_engines import kernels_reference as ref
from nexa_engines.audit import dedup, heuristics, minhash

pytestmark = pytest.mark.skipif(not kernels.NATIVE, reason="nexa_kernels is not built (make kernels)")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ASCII = "".join(chr(c) for c in range(128))
# Every ASCII character, with words and the odd non-ASCII row the kernel must hand back.
rows_st = st.lists(
    st.one_of(
        st.none(),
        st.text(alphabet=ASCII, max_size=50),
        st.lists(
            st.sampled_from(["Word", "a", "B.", "--", " ", "\t", "\x0b", "\x1f", "x_y", "$", "é"]),
            max_size=30,
        ).map("".join),
    ),
    max_size=25,
)


def test_every_ascii_character_normalizes_like_pyarrow() -> None:
    texts = [f"a{c}b" for c in ASCII] + [f"{c}x{c}" for c in ASCII] + [c * 3 for c in ASCII]
    want = dedup.normalize_texts(pa.array(texts)).to_pylist()
    assert [ref.normalize_ascii(t) for t in texts] == want


@FAST
@given(rows=rows_st, ngram=st.integers(1, 6), seed=st.integers(0, 2**32))
def test_fingerprints_equal_the_pyarrow_normalized_path(
    rows: list[str | None], ngram: int, seed: int
) -> None:
    texts = pa.array(rows, type=pa.string())
    a, b = minhash.permutations(16, seed)
    got = kernels.ascii_fingerprints(texts, ngram, a, b)
    ascii_rows = np.array([r is None or r.isascii() for r in rows], dtype=bool)
    np.testing.assert_array_equal(got.handled, ascii_rows)
    normalized = dedup.normalize_texts(texts)
    sig, counts = kernels.minhash_signatures(normalized, ngram, a, b)
    hashes = kernels.text_hashes(normalized)
    np.testing.assert_array_equal(
        got.signatures[ascii_rows], (sig[ascii_rows] & 0xFFFFFFFF).astype(np.uint32)
    )
    np.testing.assert_array_equal(got.hashes[ascii_rows], hashes[ascii_rows])
    np.testing.assert_array_equal(got.word_counts[ascii_rows], counts[ascii_rows])
    # The audit's entry point fills in the other rows through pyarrow.
    full_sig, full_hashes, full_counts = dedup.fingerprints(texts, ngram, a, b)
    np.testing.assert_array_equal(full_sig, (sig & 0xFFFFFFFF).astype(np.uint32))
    np.testing.assert_array_equal(full_hashes, hashes)
    np.testing.assert_array_equal(full_counts, counts)


PII_LIKE = [
    "a@b.co",
    "x.y+z@mail.example.org",
    "(555) 123-4567",
    "+1 555 123 4567",
    "4111 1111 1111 1111",
    "192.168.0.1",
    "v1.2.3.4",
    "123-45-6789",
    "sk-" + "a" * 24,
    "AKIA" + "A" * 16,
    "ghp_" + "b" * 36,
    "-----BEGIN PRIVATE KEY-----",
    "QUJD" * 60,
    "deadbeef" * 20,
    "é",
    "_",
    "9",
    " ",
]
pii_rows_st = st.lists(
    st.one_of(st.none(), st.lists(st.sampled_from(PII_LIKE), max_size=6).map("".join), st.text(max_size=30)),
    max_size=20,
)


@FAST
@given(rows=pii_rows_st)
def test_pattern_prefilter_equals_re2(rows: list[str | None]) -> None:
    texts = pa.array(rows, type=pa.large_string())
    patterns = {**heuristics.PII_PATTERNS, "blob": heuristics._BLOB_RE}
    found = kernels.PatternMatcher(list(patterns.values())).matches(texts)
    for j, pattern in enumerate(patterns.values()):
        np.testing.assert_array_equal(found[:, j], heuristics._matches(texts, pattern), err_msg=pattern)


def test_an_invalid_pattern_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="pattern 1 does not compile"):
        kernels.PatternMatcher(["a", "("])
