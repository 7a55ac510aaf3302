"""Slow, obviously-correct pure-Python definitions of the native kernels.

One row at a time, plain ``int`` arithmetic and ``str`` methods: this module is the
specification ``nexa_kernels`` is tested against, and the fallback when it is not
installed. Character classes the audit takes from RE2 (letters/numbers, noise) are
asked of pyarrow per row, so both paths mean the same characters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

MERSENNE_61 = (1 << 61) - 1
EMPTY_SIGNATURE = (1 << 64) - 1
MASK_64 = (1 << 64) - 1
NGRAM_MULT = 0x9E3779B97F4A7C15
BAND_MULT = 0x100000001B3
LETTER_OR_NUMBER_RE = r"[\pL\pN]"
NOISE_RE = r"[\x{0}-\x{8}\x{B}\x{C}\x{E}-\x{1F}\x{7F}-\x{9F}\x{FFFD}\p{Co}\p{Cs}]"
TEXT_STAT_FIELDS: tuple[str, ...] = (
    "bytes",
    "chars",
    "stripped_chars",
    "words",
    "word_chars",
    "lines",
    "nonempty_lines",
    "line_chars",
    "repeated_line_chars",
    "max_line_chars",
    "word_trigrams",
    "unique_word_trigrams",
    "longest_char_run",
    "letter_or_number_chars",
    "noise_chars",
    "re2_space_chars",
    "alpha_words",
    "stop_words",
    "symbol_tokens",
    "bullet_lines",
    "ellipsis_lines",
)
LETTER_RE = r"\pL"
STOP_WORDS = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))
_BULLETS = frozenset("\u2022\u2023\u25e6\u2043\u2219\u25aa\u00b7")
_RE2_SPACE = frozenset("\t\n\f\r ")


def as_text(value: str | bytes | None) -> str:
    """A row as text: null is empty, bytes decode as UTF-8 with U+FFFD for invalid sequences."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def as_bytes(value: str | bytes | None) -> bytes:
    """A row's bytes: null is empty, text is UTF-8 encoded."""
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode("utf-8")


def mix64(z: int) -> int:
    """splitmix64's finalizer on a 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK_64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK_64
    return z ^ (z >> 31)


def shingle_hashes(text: str, ngram: int) -> list[int]:
    """Hashes of the word n-grams of ``text``; fewer than ``ngram`` words make one shingle."""
    words = [xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in text.split()]
    if not words:
        return []
    starts = range(1) if len(words) < ngram else range(len(words) - ngram + 1)
    out = []
    for start in starts:
        acc = 0
        for k in range(ngram):
            word = words[start + k] if start + k < len(words) else 0
            acc = (acc * NGRAM_MULT + word) & MASK_64
        out.append(mix64(acc))
    return out


def minhash_signature(text: str, ngram: int, a: Sequence[int], b: Sequence[int]) -> list[int]:
    """One row's signature: per permutation, min of ``(a*x + b) mod 2**61-1`` over shingles' top 32 bits."""
    shingles = shingle_hashes(text, ngram)
    if not shingles:
        return [EMPTY_SIGNATURE] * len(a)
    return [
        min((int(aj) * (s >> 32) + int(bj)) % MERSENNE_61 for s in shingles)
        for aj, bj in zip(a, b, strict=True)
    ]


# ASCII characters of Unicode category P and RE2's `\s`: both collapse to one space.
_ASCII_BLANK = frozenset("!\"#%&'()*,-./:;?@[\\]_{}") | frozenset("\t\n\x0c\r ")
_ASCII_TRIM = "".join(chr(c) for c in (*range(0x09, 0x0E), *range(0x1C, 0x21)))


def normalize_ascii(value: str | bytes | None) -> str | None:
    """The audit normalization (NFKC, lower, punctuation and spaces to one space, trim) of an ASCII row, else None."""
    text = as_text(value)
    if not text.isascii():
        return None
    out: list[str] = []
    blank = False
    for ch in text.lower():
        if ch in _ASCII_BLANK:
            blank = True
            continue
        if blank:
            out.append(" ")
            blank = False
        out.append(ch)
    return "".join(out).strip(_ASCII_TRIM)


def text_hash(value: str | bytes | None) -> tuple[int, int]:
    """The 128-bit xxh3 of a row's bytes as (high, low) 64-bit halves."""
    digest = xxhash.xxh3_128_intdigest(as_bytes(value))
    return digest >> 64, digest & MASK_64


def band_key(signature: Sequence[int], band: int, rows_per_band: int) -> int:
    """The LSH bucket key of one band of a signature."""
    acc = band + 1
    for value in signature[band * rows_per_band : (band + 1) * rows_per_band]:
        acc = ((acc ^ int(value)) * BAND_MULT) & MASK_64
    return mix64(acc)


def candidate_pairs(
    signatures: Sequence[Sequence[int]], valid: Sequence[bool], bands: int, rows_per_band: int
) -> set[tuple[int, int]]:
    """Pairs ``(u < v)`` sharing a bucket: each member with its bucket's first row and its predecessor."""
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[int, list[int]] = {}
        for row, sig in enumerate(signatures):
            if valid[row]:
                buckets.setdefault(band_key(sig, band, rows_per_band), []).append(row)
        for members in buckets.values():
            for j in range(1, len(members)):
                pairs.add((members[0], members[j]))
                pairs.add((members[j - 1], members[j]))
    return pairs


def near_duplicate_clusters(
    signatures: Sequence[Sequence[int]],
    valid: Sequence[bool],
    threshold: float,
    bands: int,
    rows_per_band: int,
) -> tuple[list[int], int]:
    """Cluster label per row (its cluster's lowest row) and the number of pairs that passed verification."""
    parent = list(range(len(signatures)))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    verified = 0
    for u, v in candidate_pairs(signatures, valid, bands, rows_per_band):
        same = sum(1 for x, y in zip(signatures[u], signatures[v], strict=True) if x == y)
        if same / len(signatures[u]) >= threshold:
            verified += 1
            ru, rv = find(u), find(v)
            parent[max(ru, rv)] = min(ru, rv)
    return [find(i) for i in range(len(signatures))], verified


def _count_regex(text: str, pattern: str) -> int:
    counted = pc.count_substring_regex(pa.array([text], type=pa.large_string()), pattern)
    return int(counted[0].as_py())


def _longest_run(text: str) -> int:
    best = run = 0
    prev = None
    for c in text:
        run = run + 1 if c == prev else 1
        prev = c
        best = max(best, run)
    return best


def _is_letter_or_number(c: str) -> bool:
    return c.isascii() and c.isalnum() or (not c.isascii() and _count_regex(c, LETTER_OR_NUMBER_RE) == 1)


def _word_class(word: str) -> tuple[bool, bool]:
    """(has a letter, is a stop word): as the kernels' ``word_class``."""
    has_letter = any(c.isascii() and c.isalpha() for c in word) or (
        not word.isascii() and _count_regex(word, LETTER_RE) > 0
    )
    chars = list(word)
    while chars and not _is_letter_or_number(chars[0]):
        chars.pop(0)
    while chars and not _is_letter_or_number(chars[-1]):
        chars.pop()
    core = "".join(chars)
    return has_letter, core.isascii() and core.lower() in STOP_WORDS


def _symbol_tokens(text: str) -> int:
    """Each '#', each '\u2026', and each '...' (a run of dots counts one per three)."""
    count, dots = 0, 0
    for c in text:
        if c == ".":
            dots += 1
            continue
        count += dots // 3 + (c in "#\u2026")
        dots = 0
    return count + dots // 3


def _is_bullet_line(line: str) -> bool:
    if line[:1] in _BULLETS:
        return True
    return line[:1] in ("-", "*", "+") and len(line) > 1 and line[1].isspace()


def text_stats(value: str | bytes | None) -> dict[str, int]:
    """The statistics of one row, named as in ``TEXT_STAT_FIELDS``."""
    text = as_text(value)
    words = text.split()
    raw_lines = text.splitlines()
    lines = [line.strip() for line in raw_lines if line.strip()]
    counts = Counter(lines)
    lowered = text.lower().split()
    trigrams = list(zip(lowered, lowered[1:], lowered[2:], strict=False))
    classes = [_word_class(w) for w in words]
    return {
        "bytes": len(as_bytes(value)),
        "chars": len(text),
        "stripped_chars": len(text.strip()),
        "words": len(words),
        "word_chars": sum(len(w) for w in words),
        "lines": len(raw_lines),
        "nonempty_lines": len(lines),
        "line_chars": sum(len(line) for line in lines),
        "repeated_line_chars": sum(len(line) * (n - 1) for line, n in counts.items()),
        "max_line_chars": max((len(line) for line in raw_lines), default=0),
        "word_trigrams": len(trigrams),
        "unique_word_trigrams": len(set(trigrams)),
        "longest_char_run": _longest_run(text),
        "letter_or_number_chars": _count_regex(text, LETTER_OR_NUMBER_RE),
        "noise_chars": _count_regex(text, NOISE_RE),
        "re2_space_chars": sum(1 for c in text if c in _RE2_SPACE),
        "alpha_words": sum(1 for w in classes if w[0]),
        "stop_words": sum(1 for w in classes if w[1]),
        "symbol_tokens": _symbol_tokens(text),
        "bullet_lines": sum(1 for line in lines if _is_bullet_line(line)),
        "ellipsis_lines": sum(1 for line in lines if line.endswith(("...", "\u2026"))),
    }


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> tuple[list[int], list[int], int]:
    """Bin and offset per sequence, longest first (ties by index) into the first bin with room."""
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    for i, length in enumerate(lengths):
        if not 0 <= length <= capacity:
            raise ValueError(f"sequence {i} has length {length}, outside 0..={capacity}")
    fill: list[int] = []
    bins = [0] * len(lengths)
    offsets = [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        bin_ = next((k for k, used in enumerate(fill) if capacity - used >= lengths[i]), len(fill))
        if bin_ == len(fill):
            fill.append(0)
        bins[i], offsets[i] = bin_, fill[bin_]
        fill[bin_] += lengths[i]
    return bins, offsets, len(fill)


def position_ids(
    lengths: Sequence[int],
    bins: Sequence[int],
    offsets: Sequence[int],
    num_bins: int,
    capacity: int,
    pad: int,
) -> list[list[int]]:
    """Per bin, the position of each token within its sequence, ``pad`` where no token is."""
    out = [[pad] * capacity for _ in range(num_bins)]
    for length, bin_, start in zip(lengths, bins, offsets, strict=True):
        out[bin_][start : start + length] = range(length)
    return out
