"""The data-path kernels the engines call: native (``nexa_kernels``, Rust) when installed,
else the pure-Python reference in ``kernels_reference`` (same results, far slower).

Which path runs is logged once, at first use. ``NEXA_KERNELS=python`` forces the
reference (to compare the two); ``NEXA_KERNELS=native`` makes a missing extension an
import error instead of a slow fallback. Every function takes pyarrow arrays
(chunked or not; string, large_string, binary or large_binary) or numpy arrays and
returns numpy arrays; on the native path no Python object is made per row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nexa_engines import kernels_reference as ref

log = logging.getLogger(__name__)

_CHOICE = os.environ.get("NEXA_KERNELS", "auto")
if _CHOICE not in ("auto", "native", "python"):
    raise ImportError(f"NEXA_KERNELS must be auto, native or python, not {_CHOICE!r}")

_native: ModuleType | None = None
if _CHOICE != "python":
    try:
        import nexa_kernels as _native
    except ImportError:  # the Rust extension is optional: `make kernels` builds it
        if _CHOICE == "native":
            raise

NATIVE: bool = _native is not None
EMPTY_SIGNATURE = np.uint64(ref.EMPTY_SIGNATURE)
TEXT_STAT_FIELDS: tuple[str, ...] = ref.TEXT_STAT_FIELDS
STOP_WORDS: tuple[str, ...] = tuple(sorted(ref.STOP_WORDS))
_TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())
_announced = False


def backend() -> str:
    """``"native"`` when the Rust kernels are installed, else ``"python"``."""
    return "native" if NATIVE else "python"


def _announce() -> None:
    global _announced
    if _announced:
        return
    _announced = True
    if _native is not None:
        log.info("kernels: native nexa_kernels %s on %d threads", _native.__version__, _native.num_threads())
    else:
        log.warning(
            "kernels: nexa_kernels is not installed; using the slow pure-Python reference "
            "(build it with `make kernels` or `pip install ./rust`)"
        )


def _chunks(texts: pa.Array | pa.ChunkedArray) -> Iterator[pa.Array]:
    """The array's chunks, each as a string/binary array the kernels read in place."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    for chunk in chunks:
        if chunk.type not in _TEXT_TYPES:
            try:
                chunk = pc.cast(chunk, pa.large_string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TypeError(f"expected a column of text, got {chunk.type}") from exc
        yield chunk


def _spans(texts: pa.Array | pa.ChunkedArray) -> Iterator[tuple[int, int, pa.Array]]:
    start = 0
    for chunk in _chunks(texts):
        yield start, start + len(chunk), chunk
        start += len(chunk)


def _u64(values: Any, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.uint64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    return arr


def minhash_signatures(
    normalized: pa.Array | pa.ChunkedArray, ngram: int, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, num_perm) uint64 MinHash signatures of word n-grams and each row's word count.

    Rows without words have every entry ``EMPTY_SIGNATURE``. ``a`` (in ``[1, 2**32)``) and
    ``b`` (below ``2**61-1``) are the permutation coefficients.
    """
    _announce()
    a64, b64 = _u64(a, "a"), _u64(b, "b")
    if len(a64) != len(b64) or len(a64) == 0:
        raise ValueError("a and b must be equally long and non-empty")
    if ngram < 1:
        raise ValueError("ngram must be at least 1")
    n = len(normalized)
    out = np.empty((n, len(a64)), dtype=np.uint64)
    counts = np.empty(n, dtype=np.int64)
    for start, end, chunk in _spans(normalized):
        if _native is not None:
            _native.minhash_signatures(chunk, ngram, a64, b64, out[start:end], counts[start:end])
            continue
        for i, value in enumerate(chunk.to_pylist(), start):
            text = ref.as_text(value)
            out[i] = ref.minhash_signature(text, ngram, a64.tolist(), b64.tolist())
            counts[i] = len(text.split())
    return out, counts


@dataclass(frozen=True)
class Fingerprints:
    """What dedup needs of each row's normalized text; only rows marked ``handled`` are filled."""

    signatures: np.ndarray  # (rows, num_perm) uint32: the low 32 bits of each MinHash entry
    hashes: np.ndarray  # (rows, 2) uint64: xxh3-128 of the normalized text
    word_counts: np.ndarray  # int64 words of the normalized text
    handled: np.ndarray  # bool: the row was ASCII, so normalized and hashed here


def ascii_fingerprints(
    texts: pa.Array | pa.ChunkedArray, ngram: int, a: np.ndarray, b: np.ndarray
) -> Fingerprints:
    """For every ASCII row, normalize it as the audit does and hash it, in one pass.

    Equals ``text_hashes`` and ``minhash_signatures`` (low 32 bits) of the normalized
    column; other rows are left zero with ``handled`` false, for the caller to
    normalize with pyarrow.
    """
    _announce()
    a64, b64 = _u64(a, "a"), _u64(b, "b")
    if len(a64) != len(b64) or len(a64) == 0:
        raise ValueError("a and b must be equally long and non-empty")
    if ngram < 1:
        raise ValueError("ngram must be at least 1")
    n = len(texts)
    out = Fingerprints(
        np.zeros((n, len(a64)), dtype=np.uint32),
        np.zeros((n, 2), dtype=np.uint64),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.bool_),
    )
    for start, end, chunk in _spans(texts):
        if _native is not None:
            _native.ascii_fingerprints(
                chunk,
                ngram,
                a64,
                b64,
                out.signatures[start:end],
                out.hashes[start:end],
                out.word_counts[start:end],
                out.handled[start:end],
            )
            continue
        for i, value in enumerate(chunk.to_pylist(), start):
            text = ref.normalize_ascii(value)
            if text is None:
                continue
            sig = ref.minhash_signature(text, ngram, a64.tolist(), b64.tolist())
            out.signatures[i] = [v & 0xFFFFFFFF for v in sig]
            out.hashes[i] = ref.text_hash(text)
            out.word_counts[i] = len(text.split())
            out.handled[i] = True
    return out


class PatternMatcher:
    """Regular expressions compiled once; ``matches`` says which of them occur in each row.

    Classes and word boundaries are ASCII, as in RE2 (pyarrow); for patterns made of
    ASCII atoms the answer equals ``pyarrow.compute.match_substring_regex``.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._native = _native.PatternSet(list(self.patterns)) if _native is not None else None

    def matches(self, texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """A (rows, patterns) bool array: pattern j occurs in row i (nulls match nothing)."""
        _announce()
        out = np.zeros((len(texts), len(self.patterns)), dtype=np.bool_)
        for start, end, chunk in _spans(texts):
            if self._native is not None:
                self._native.matches(chunk, out[start:end])
                continue
            for j, pattern in enumerate(self.patterns):
                found = pc.match_substring_regex(chunk.cast(pa.large_string()), pattern).fill_null(False)
                out[start:end, j] = np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.bool_)
        return out


def text_hashes(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A (rows, 2) uint64 array: the 128-bit xxh3 of each row's bytes (null hashes as empty)."""
    _announce()
    out = np.empty((len(texts), 2), dtype=np.uint64)
    for start, end, chunk in _spans(texts):
        if _native is not None:
            _native.text_hashes(chunk, out[start:end])
            continue
        for i, value in enumerate(chunk.to_pylist(), start):
            out[i] = ref.text_hash(value)
    return out


def near_duplicate_clusters(
    signatures: np.ndarray, valid: np.ndarray, threshold: float, bands: int, rows_per_band: int
) -> tuple[np.ndarray, int]:
    """Cluster label per row (its cluster's lowest row; its own index when alone) and the verified pair count.

    Rows sharing an LSH bucket are candidates; a pair joins when the fraction of equal
    signature entries reaches ``threshold``. Rows where ``valid`` is false stay alone.
    """
    _announce()
    sig = np.ascontiguousarray(signatures)
    if sig.ndim != 2 or sig.dtype not in (np.uint16, np.uint32, np.uint64):
        raise ValueError("signatures must be a 2-D uint16, uint32 or uint64 array")
    ok = np.ascontiguousarray(valid, dtype=np.bool_)
    if ok.shape != (sig.shape[0],):
        raise ValueError(f"valid must hold one flag per row ({sig.shape[0]}), got shape {ok.shape}")
    if bands < 1 or rows_per_band < 1 or bands * rows_per_band > sig.shape[1]:
        raise ValueError(f"need bands * rows_per_band <= {sig.shape[1]}, got {bands} x {rows_per_band}")
    labels = np.empty(sig.shape[0], dtype=np.int64)
    if _native is not None:
        pairs = _native.near_duplicate_clusters(
            sig, sig.shape[1], ok, threshold, bands, rows_per_band, labels
        )
        return labels, pairs
    found, pairs = ref.near_duplicate_clusters(sig.tolist(), ok.tolist(), threshold, bands, rows_per_band)
    labels[:] = found
    return labels, pairs


@dataclass(frozen=True)
class TextStats:
    """Per-row text statistics: one int64 column per name in ``TEXT_STAT_FIELDS``."""

    matrix: np.ndarray  # (rows, len(TEXT_STAT_FIELDS)) int64

    def __getitem__(self, name: str) -> np.ndarray:
        """The column of one statistic."""
        try:
            col: np.ndarray = self.matrix[:, TEXT_STAT_FIELDS.index(name)]
        except ValueError:
            raise KeyError(f"no text statistic {name!r}; known: {', '.join(TEXT_STAT_FIELDS)}") from None
        return col

    def __len__(self) -> int:
        return int(self.matrix.shape[0])


def text_stats(texts: pa.Array | pa.ChunkedArray) -> TextStats:
    """Lengths, word/line counts, repetition and character-class counts of every row, in one pass."""
    _announce()
    out = np.empty((len(texts), len(TEXT_STAT_FIELDS)), dtype=np.int64)
    for start, end, chunk in _spans(texts):
        if _native is not None:
            _native.text_stats(chunk, out[start:end])
            continue
        for i, value in enumerate(chunk.to_pylist(), start):
            row = ref.text_stats(value)
            out[i] = [row[name] for name in TEXT_STAT_FIELDS]
    return TextStats(out)


@dataclass(frozen=True)
class Packing:
    """Where each sequence went: its bin and its start offset inside the bin."""

    bins: np.ndarray  # int64 per sequence
    offsets: np.ndarray  # int64 per sequence
    num_bins: int
    capacity: int

    def efficiency(self, lengths: np.ndarray) -> float:
        """Tokens over bin slots (1.0 means no padding)."""
        slots = self.num_bins * self.capacity
        return float(np.sum(lengths)) / slots if slots else 1.0


def pack_sequences(lengths: np.ndarray, capacity: int) -> Packing:
    """First-fit-decreasing packing of token lengths into bins of ``capacity`` tokens."""
    _announce()
    lens = np.ascontiguousarray(lengths, dtype=np.int64)
    if lens.ndim != 1:
        raise ValueError("lengths must be one-dimensional")
    if _native is not None:
        bins = np.empty(len(lens), dtype=np.int64)
        offsets = np.empty(len(lens), dtype=np.int64)
        used = _native.pack_first_fit_decreasing(lens, capacity, bins, offsets)
        return Packing(bins, offsets, int(used), capacity)
    b, o, used = ref.first_fit_decreasing(lens.tolist(), capacity)
    return Packing(np.array(b, dtype=np.int64), np.array(o, dtype=np.int64), used, capacity)


def position_ids(lengths: np.ndarray, packing: Packing, pad: int = -1) -> np.ndarray:
    """A (bins, capacity) int32 array: each token's position within its sequence, ``pad`` elsewhere."""
    _announce()
    lens = np.ascontiguousarray(lengths, dtype=np.int64)
    if _native is not None:
        out = np.empty((packing.num_bins, packing.capacity), dtype=np.int32)
        _native.position_ids(lens, packing.bins, packing.offsets, packing.capacity, pad, out)
        return out
    rows = ref.position_ids(
        lens.tolist(),
        packing.bins.tolist(),
        packing.offsets.tolist(),
        packing.num_bins,
        packing.capacity,
        pad,
    )
    return np.array(rows, dtype=np.int32).reshape(packing.num_bins, packing.capacity)
