"""Exact and near-duplicate detection over whole datasets.

Exact duplicates compare a 128-bit xxh3 hash of the normalized text (NFKC,
lowercased, punctuation removed, whitespace collapsed). Near duplicates come from
MinHash signatures: LSH candidate pairs, verified by the estimated Jaccard
similarity, then grouped into clusters labelled by their lowest row index. Hashing and
clustering run in the Rust kernels when they are built (``nexa_engines.kernels``),
with identical results.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from nexa_engines import kernels
from nexa_engines.audit import minhash

_LOW_64 = (1 << 64) - 1


def normalize_texts(texts: pa.Array) -> pa.Array:
    """NFKC, Unicode lowercase, punctuation to spaces, whitespace collapsed and trimmed."""
    out = pc.utf8_normalize(pc.fill_null(texts, ""), "NFKC")
    out = pc.utf8_lower(out)
    out = pc.replace_substring_regex(out, r"[\p{P}]+", " ")
    out = pc.replace_substring_regex(out, r"\s+", " ")
    return pc.utf8_trim_whitespace(out)


def text_hashes(normalized: pa.Array) -> np.ndarray:
    """A (rows, 2) uint64 array: the 128-bit xxh3 hash of each normalized text."""
    if kernels.NATIVE:
        return kernels.text_hashes(normalized)
    out = np.zeros((len(normalized), 2), dtype=np.uint64)
    for i, text in enumerate(normalized.to_pylist()):
        digest = xxhash.xxh3_128_intdigest((text or "").encode("utf-8"))
        out[i, 0] = digest >> 64
        out[i, 1] = digest & _LOW_64
    return out


def fingerprints(
    texts: pa.Array, ngram: int, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of each raw text's normalized form: uint32 MinHash signatures (low 32 bits), the
    (rows, 2) xxh3-128 hashes and the word counts.

    The low 32 bits are all LSH and the Jaccard estimate need (a false match has odds
    2**-32 per entry) at half the memory. With the native kernels, ASCII rows are
    normalized and hashed in one Rust pass; only the other rows go through pyarrow.
    """
    if kernels.NATIVE:
        found = kernels.ascii_fingerprints(texts, ngram, a, b)
        rest = np.flatnonzero(~found.handled)
        if rest.size:
            normalized = normalize_texts(texts.take(pa.array(rest)))
            sig, counts = minhash.text_signatures(normalized, ngram, a, b)
            found.signatures[rest] = sig & np.uint64(0xFFFFFFFF)
            found.hashes[rest] = text_hashes(normalized)
            found.word_counts[rest] = counts
        return found.signatures, found.hashes, found.word_counts
    normalized = normalize_texts(texts)
    sig, counts = minhash.text_signatures(normalized, ngram, a, b)
    return (sig & np.uint64(0xFFFFFFFF)).astype(np.uint32), text_hashes(normalized), counts


def first_occurrence(hashes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with the same hash (itself when first or not valid)."""
    n = len(hashes)
    first = np.arange(n, dtype=np.int64)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return first
    hi, lo = hashes[idx, 0], hashes[idx, 1]
    order = np.lexsort((idx, lo, hi))  # by hash, then by row so a group starts at its first row
    sorted_rows = idx[order]
    starts = np.concatenate([[True], (hi[order][1:] != hi[order][:-1]) | (lo[order][1:] != lo[order][:-1])])
    group = np.cumsum(starts) - 1
    first[sorted_rows] = sorted_rows[np.flatnonzero(starts)][group]
    return first


def connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Component label per node for the edges ``(u, v)``: the smallest node index in its component."""
    labels = np.arange(n, dtype=np.int64)
    if u.size == 0:
        return labels
    while True:
        lu, lv = labels[u], labels[v]
        low = np.minimum(lu, lv)
        hooked = labels.copy()
        # Hook each root to the smaller root across every edge, then compress paths fully.
        np.minimum.at(hooked, lu, low)
        np.minimum.at(hooked, lv, low)
        while True:
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, labels):
            return labels
        labels = hooked


def near_duplicate_clusters(
    sig: np.ndarray, valid: np.ndarray, threshold: float, bands: int, rows: int
) -> tuple[np.ndarray, int]:
    """Cluster label per row (lowest member's index; own index when alone) and the verified pair count."""
    if kernels.NATIVE:
        return kernels.near_duplicate_clusters(sig, valid, threshold, bands, rows)
    if not valid.any():
        return np.arange(len(sig), dtype=np.int64), 0
    keys = minhash.band_keys(sig, bands, rows)
    u, v = minhash.candidate_pairs(keys, valid)
    if u.size:
        keep = minhash.estimated_jaccard(sig, u, v) >= threshold
        u, v = u[keep], v[keep]
    return connected_components(len(sig), u, v), int(u.size)
