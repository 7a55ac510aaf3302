"""Per-row quality heuristics: empty, length, repetition, non-text, PII, and the Gopher/C4/FineWeb
quality filters (symbol ratio, words with letters, mean word length, stop words, bullet and
ellipsis lines).

Every public function takes a batch of texts (a pyarrow string array) and returns
numpy arrays with one entry per row, so a native kernel can replace any of them
without touching the engine. Character-class counting and PII pre-filtering run
as vectorized pyarrow (RE2) kernels; Python only looks at the few rows a
pre-filter selects, and at repetition, which needs per-row structure. When the
Rust kernels are built (``nexa_engines.kernels``), character counts and repetition
come from their one-pass text statistics instead, with identical results.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nexa_engines import kernels

# Flags in bit order; the order is also the order flags appear in `nexa_flags`.
FLAG_NAMES: tuple[str, ...] = (
    "empty",
    "too_short",
    "too_long",
    "repetitive",
    "non_text",
    "pii",
    "exact_duplicate",
    "near_duplicate",
    # The Gopher quality filters (Rae et al. 2021, as C4 and FineWeb use them), appended so
    # that the bits above keep their values.
    "symbol_ratio",
    "low_alpha_words",
    "word_length",
    "no_stop_words",
    "bullet_lines",
    "ellipsis_lines",
)
FLAG_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(FLAG_NAMES)}

# Thresholds, documented in docs/audit.md.
NOISE_FRACTION = 0.05  # control, replacement and private-use characters per character
MIN_TEXTY_FRACTION = 0.30  # letters+digits among non-space characters
TEXTY_MIN_CHARS = 16  # shorter strings are too small to judge by character mix
REPEAT_MIN_WORDS = 12
REPEAT_TRIGRAM_UNIQUE = 0.5  # distinct word trigrams / all trigrams below this is repetitive
REPEAT_LINE_FRACTION = 0.5  # characters in repeated lines above this is repetitive
REPEAT_CHAR_RUN = 20  # one character repeated this many times in a row ...
REPEAT_CHAR_RUN_FRACTION = 0.3  # ... covering at least this share of the text

# Gopher quality filters, on rows with enough words to judge (an SFT answer "Paris" is fine).
WORD_FILTER_MIN_WORDS = 20  # symbol_ratio, low_alpha_words, word_length look at rows this long
MAX_SYMBOL_WORD_RATIO = 0.1  # '#', '...' and '\u2026' per word above this: symbol_ratio
MIN_ALPHA_WORD_FRACTION = 0.8  # share of words with a letter below this: low_alpha_words
MIN_MEAN_WORD_LENGTH = 3.0  # mean characters per word outside [3, 10]: word_length
MAX_MEAN_WORD_LENGTH = 10.0
STOP_WORD_MIN_WORDS = 50  # no_stop_words looks at rows this long (Gopher's shortest document)
MIN_STOP_WORDS = 2  # fewer of STOP_WORDS than this: no_stop_words
STOP_WORDS = kernels.STOP_WORDS  # the, be, to, of, and, that, have, with
LINE_FILTER_MIN_LINES = 3  # bullet_lines and ellipsis_lines look at rows with this many lines
MAX_BULLET_LINE_FRACTION = 0.9  # lines starting with a bullet above this share: bullet_lines
MAX_ELLIPSIS_LINE_FRACTION = 0.3  # lines ending in an ellipsis above this share: ellipsis_lines

_NOISE_RE = r"[\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}\x{FFFD}\p{Co}\p{Cs}]"
# Long unbroken base64/hex runs: embedded binary blobs rather than prose.
_BLOB_RE = r"[A-Za-z0-9+/]{200,}={0,2}|[0-9a-fA-F]{128,}"
_BLOB_PY = re.compile(_BLOB_RE)
_CHAR_RUN_PY = re.compile(r"(.)\1{" + str(REPEAT_CHAR_RUN - 1) + ",}", re.DOTALL)

# PII patterns. Each is valid both as RE2 (pyarrow pre-filter) and Python `re`.
PII_PATTERNS: dict[str, str] = {
    "email": r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b",
    "phone": (
        r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{3}\)[ .\-]?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b"
        r"|\+\d{1,3}[ .\-]\d{2,4}[ .\-]\d{3,4}[ .\-]\d{3,4}\b"
    ),
    "credit_card": r"\b(?:\d[ \-]?){12,18}\d\b",
    "ipv4": r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "secret": (
        r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}"
        r"|\bAKIA[0-9A-Z]{16}\b"
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}"
        r"|\bxox[abprs]-[A-Za-z0-9\-]{10,}"
        r"|\bAIza[0-9A-Za-z_\-]{35}"
        r"|\b(?:sk|rk)_live_[0-9A-Za-z]{20,}"
        r"|\bhf_[A-Za-z0-9]{30,}"
        r"|-----BEGIN (?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY-----"
    ),
}
_PII_PY = {kind: re.compile(p) for kind, p in PII_PATTERNS.items()}


@dataclass
class HeuristicResult:
    """Per-row results for one batch."""

    flags: np.ndarray  # uint16 bit mask per row (FLAG_BITS)
    char_len: np.ndarray  # int64, characters after stripping surrounding whitespace
    pii_kinds: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> bool per row


def _counts(texts: pa.Array, pattern: str) -> np.ndarray:
    counted = pc.count_substring_regex(texts, pattern)
    return np.asarray(counted.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _matches(texts: pa.Array, pattern: str) -> np.ndarray:
    matched = pc.match_substring_regex(texts, pattern)
    return np.asarray(matched.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def stripped_lengths(texts: pa.Array) -> np.ndarray:
    """Characters per row after stripping surrounding whitespace (0 for nulls)."""
    lengths = pc.utf8_length(pc.utf8_trim_whitespace(texts)).fill_null(0)
    return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)


def non_text_mask(
    texts: pa.Array,
    char_len: np.ndarray,
    stats: kernels.TextStats | None = None,
    blob: np.ndarray | None = None,
) -> np.ndarray:
    """Rows that look like binary or symbol soup rather than natural text or code.

    ``stats`` (the rows' `kernels.text_stats`) and ``blob`` (`_BLOB_RE` matches) may be
    passed in when the caller already has them.
    """
    if kernels.NATIVE:
        stats = stats if stats is not None else kernels.text_stats(texts)
        total, noise = stats["chars"], stats["noise_chars"]
        texty, spaces = stats["letter_or_number_chars"], stats["re2_space_chars"]
    else:
        total = np.asarray(pc.utf8_length(texts).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        noise = _counts(texts, _NOISE_RE)
        texty = _counts(texts, r"[\pL\pN]")
        spaces = _counts(texts, r"\s")
    non_space = total - spaces
    safe_total = np.maximum(total, 1)
    safe_non_space = np.maximum(non_space, 1)
    noisy = noise / safe_total > NOISE_FRACTION
    soup = (non_space >= TEXTY_MIN_CHARS) & (texty / safe_non_space < MIN_TEXTY_FRACTION)
    blob = (blob if blob is not None else _regex_masks(texts, {"blob": _BLOB_RE})["blob"]).copy()
    if blob.any():
        # A long run of letters alone (a DNA string, a long word) is not a blob: a real
        # base64/hex payload mixes digits with letters.
        rows = np.flatnonzero(blob)
        values = texts.take(pa.array(rows)).to_pylist()
        blob[rows] = [any(_looks_encoded(m.group(0)) for m in _BLOB_PY.finditer(v or "")) for v in values]
    out: np.ndarray = (char_len > 0) & (noisy | soup | blob)
    return out


def _looks_encoded(run: str) -> bool:
    return any(c.isdigit() for c in run) and any(c.isalpha() for c in run)


def quality_filter_masks(texts: pa.Array, stats: kernels.TextStats | None = None) -> dict[str, np.ndarray]:
    """The Gopher quality filters of every row (a mask per flag name); thresholds above, in docs/audit.md.

    Everything comes from the rows' text statistics (one pass; ``kernels.text_stats``).
    """
    s = stats if stats is not None else kernels.text_stats(texts)
    words = s["words"]
    safe_words = np.maximum(words, 1).astype(np.float64)
    judged = words >= WORD_FILTER_MIN_WORDS
    mean_length = s["word_chars"] / safe_words
    lines = s["nonempty_lines"]
    safe_lines = np.maximum(lines, 1).astype(np.float64)
    multi_line = lines >= LINE_FILTER_MIN_LINES
    return {
        "symbol_ratio": judged & (s["symbol_tokens"] / safe_words > MAX_SYMBOL_WORD_RATIO),
        "low_alpha_words": judged & (s["alpha_words"] / safe_words < MIN_ALPHA_WORD_FRACTION),
        "word_length": judged & ((mean_length < MIN_MEAN_WORD_LENGTH) | (mean_length > MAX_MEAN_WORD_LENGTH)),
        "no_stop_words": (words >= STOP_WORD_MIN_WORDS) & (s["stop_words"] < MIN_STOP_WORDS),
        "bullet_lines": multi_line & (s["bullet_lines"] / safe_lines > MAX_BULLET_LINE_FRACTION),
        "ellipsis_lines": multi_line & (s["ellipsis_lines"] / safe_lines > MAX_ELLIPSIS_LINE_FRACTION),
    }


def is_repetitive(text: str) -> bool:
    """True when the text is dominated by repeated lines, word trigrams or one character."""
    if len(text) < REPEAT_CHAR_RUN:
        return False
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 3:
        counts = Counter(lines)
        repeated = sum(len(line) * (n - 1) for line, n in counts.items() if n > 1)
        if repeated / max(1, sum(len(line) for line in lines)) > REPEAT_LINE_FRACTION:
            return True
    words = text.lower().split()
    if len(words) >= REPEAT_MIN_WORDS:
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        if len(set(trigrams)) / len(trigrams) < REPEAT_TRIGRAM_UNIQUE:
            return True
    longest = max((len(m.group(0)) for m in _CHAR_RUN_PY.finditer(text)), default=0)
    return longest >= REPEAT_CHAR_RUN and longest / len(text) >= REPEAT_CHAR_RUN_FRACTION


def _repetitive_from_stats(s: kernels.TextStats) -> np.ndarray:
    """`is_repetitive` for every row, read off its text statistics."""
    chars, run = s["chars"], s["longest_char_run"]
    lines = (s["nonempty_lines"] >= 3) & (
        s["repeated_line_chars"] > REPEAT_LINE_FRACTION * np.maximum(1, s["line_chars"])
    )
    trigrams = (s["words"] >= REPEAT_MIN_WORDS) & (
        s["unique_word_trigrams"] < REPEAT_TRIGRAM_UNIQUE * s["word_trigrams"]
    )
    runs = (run >= REPEAT_CHAR_RUN) & (run >= REPEAT_CHAR_RUN_FRACTION * chars)
    out: np.ndarray = (chars >= REPEAT_CHAR_RUN) & (lines | trigrams | runs)
    return out


def repetitive_mask(
    texts: pa.Array, char_len: np.ndarray, stats: kernels.TextStats | None = None
) -> np.ndarray:
    """Rows where `is_repetitive` holds (only rows long enough to repeat are examined)."""
    if kernels.NATIVE:
        stats = stats if stats is not None else kernels.text_stats(texts)
        native: np.ndarray = (char_len >= REPEAT_CHAR_RUN) & _repetitive_from_stats(stats)
        return native
    out = np.zeros(len(texts), dtype=bool)
    candidates = np.flatnonzero(char_len >= REPEAT_CHAR_RUN)
    if candidates.size == 0:
        return out
    values = texts.take(pa.array(candidates)).to_pylist()
    out[candidates] = [is_repetitive(v) for v in values]
    return out


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits holds."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay): a long number
# that merely passes Luhn (one in ten do) is not taken for a card without one.
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65|64[4-9]|35|30|36|38|62)")


def _valid_card(match: str) -> bool:
    digits = re.sub(r"[ \-]", "", match)
    return (
        13 <= len(digits) <= 19
        and len(set(digits)) > 1
        and _CARD_PREFIX.match(digits) is not None
        and luhn_valid(digits)
    )


def _valid_ssn(match: str) -> bool:
    area, group, serial = match.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _valid_ipv4(text: str, m: re.Match[str]) -> bool:
    # "1.2.3.4.5" is a version string, not an address; neither is "v1.2.3.4".
    before = text[m.start() - 1] if m.start() > 0 else ""
    after = text[m.end() : m.end() + 2]
    return before not in (".", "v", "V") and not (after[:1] == "." and after[1:2].isdigit())


def _confirm(kind: str, text: str) -> bool:
    for m in _PII_PY[kind].finditer(text):
        if kind == "credit_card" and not _valid_card(m.group(0)):
            continue
        if kind == "ssn" and not _valid_ssn(m.group(0)):
            continue
        if kind == "ipv4" and not _valid_ipv4(text, m):
            continue
        return True
    return False


@lru_cache(maxsize=8)
def _matcher(patterns: tuple[str, ...]) -> kernels.PatternMatcher:
    return kernels.PatternMatcher(patterns)


def _regex_masks(texts: pa.Array, patterns: dict[str, str]) -> dict[str, np.ndarray]:
    """Per pattern name, the rows RE2 (pyarrow) finds it in.

    With the native kernels one Rust pass over the rows finds the candidates (the same
    ASCII-class semantics as RE2) and pyarrow confirms only those, so the answer stays
    RE2's while most rows are scanned once instead of once per pattern.
    """
    if not kernels.NATIVE:
        return {name: _matches(texts, p) for name, p in patterns.items()}
    found = _matcher(tuple(patterns.values())).matches(texts)
    out: dict[str, np.ndarray] = {}
    for j, (name, pattern) in enumerate(patterns.items()):
        rows = np.flatnonzero(found[:, j])
        mask = np.zeros(len(texts), dtype=bool)
        if rows.size:
            mask[rows] = _matches(texts.take(pa.array(rows)), pattern)
        out[name] = mask
    return out


def pii_masks(texts: pa.Array, found: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per PII kind, the rows that contain at least one (checksums and validity rules applied).

    ``found`` (each kind's `PII_PATTERNS` matches) may be passed in when already computed.
    """
    found = found if found is not None else _regex_masks(texts, PII_PATTERNS)
    out: dict[str, np.ndarray] = {}
    for kind in PII_PATTERNS:
        mask = found[kind].copy()
        if kind in ("credit_card", "ssn", "ipv4") and mask.any():
            rows = np.flatnonzero(mask)
            mask[rows] = [_confirm(kind, v or "") for v in texts.take(pa.array(rows)).to_pylist()]
        out[kind] = mask
    return out


def _large(texts: pa.Array) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    return texts if texts.type == pa.large_string() else pc.cast(texts, pa.large_string())


def compute_flags(
    texts: pa.Array,
    *,
    min_chars: int,
    max_chars: int,
    empty_field: np.ndarray | None = None,
    fields: list[pa.Array] | None = None,
) -> HeuristicResult:
    """Heuristic flags for a batch of joined texts.

    ``empty_field`` marks rows where a required field is blank. With ``fields`` (each
    text column on its own), `repetitive` and `non_text` hold when any one field is
    so: a garbage response is not hidden by a clean instruction beside it.
    """
    texts = _large(texts)
    parts = [_large(f) for f in fields] if fields else [texts]
    # One text-statistics pass and one regex pass per column, shared by every check.
    stats = kernels.text_stats(texts) if kernels.NATIVE else None
    char_len = stats["stripped_chars"] if stats is not None else stripped_lengths(texts)
    found = _regex_masks(texts, {**PII_PATTERNS, "blob": _BLOB_RE})
    empty = char_len == 0
    if empty_field is not None:
        empty |= empty_field
    present = char_len > 0
    flags = np.zeros(len(texts), dtype=np.uint16)
    flags[empty] |= FLAG_BITS["empty"]
    flags[present & ~empty & (char_len < min_chars)] |= FLAG_BITS["too_short"]
    flags[char_len > max_chars] |= FLAG_BITS["too_long"]
    for part in parts:
        if part is texts:
            part_stats, part_len, blob = stats, char_len, found["blob"]
        else:
            part_stats = kernels.text_stats(part) if kernels.NATIVE else None
            part_len = part_stats["stripped_chars"] if part_stats is not None else stripped_lengths(part)
            blob = _regex_masks(part, {"blob": _BLOB_RE})["blob"]
        flags[repetitive_mask(part, part_len, part_stats)] |= FLAG_BITS["repetitive"]
        flags[non_text_mask(part, part_len, part_stats, blob)] |= FLAG_BITS["non_text"]
        for name, mask in quality_filter_masks(part, part_stats).items():
            flags[mask] |= FLAG_BITS[name]
    kinds = pii_masks(texts, found)
    any_pii = np.zeros(len(texts), dtype=bool)
    for mask in kinds.values():
        any_pii |= mask
    flags[any_pii] |= FLAG_BITS["pii"]
    return HeuristicResult(flags=flags, char_len=char_len, pii_kinds=kinds)


def flag_lists(flags: np.ndarray) -> pa.ListArray:
    """The `nexa_flags` column (list<string>, names in FLAG_NAMES order) from bit masks."""
    bits = ((flags[:, None] >> np.arange(len(FLAG_NAMES), dtype=np.uint16)) & 1).astype(bool)
    rows, which = np.nonzero(bits)
    offsets = np.zeros(len(flags) + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=len(flags)), out=offsets[1:])
    names = pa.array(FLAG_NAMES, type=pa.string()).take(pa.array(which, type=pa.int32()))
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), names)
