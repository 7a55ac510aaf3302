"""MinHash signatures and LSH banding, vectorized with numpy.

Shingles are word n-grams of the normalized text. Each distinct word is hashed
once with xxh3 (Python touches only a batch's distinct words); n-gram hashes are
built from word hashes with numpy. Each of ``num_perm`` permutations is the
universal hash ``(a*x + b) mod (2**61 - 1)``; a row's signature is the minimum
over its shingles. ``a`` is drawn below 2**32 and ``x`` is the top 32 bits of the
shingle hash, so ``a*x`` fits in 64 bits and the Mersenne reduction is exact
without 128-bit arithmetic (a native kernel can reproduce it bit for bit).
`text_signatures` runs the whole pipeline in the Rust kernel when it is built
(``nexa_engines.kernels``), with identical results.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from nexa_engines import kernels

MERSENNE_61 = np.uint64((1 << 61) - 1)
EMPTY = np.uint64(np.iinfo(np.uint64).max)  # signature value of a row without shingles
_SHIFT_61 = np.uint64(61)
_SHIFT_32 = np.uint64(32)
_NGRAM_MULT = np.uint64(0x9E3779B97F4A7C15)
_BAND_MULT = np.uint64(0x100000001B3)
_CHUNK_ELEMENTS = 1 << 21  # shingles x permutations per vectorized step (16 MiB of uint64)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` coefficients of ``num_perm`` hash permutations, fixed by ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, int(MERSENNE_61), size=num_perm, dtype=np.uint64)
    return a, b


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the output."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = z ^ (z >> np.uint64(31))
    return out


def split_words(normalized: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The words of each normalized text (flat) and the int64 row offsets into them."""
    lists = pc.utf8_split_whitespace(pc.fill_null(normalized, ""))
    flat = lists.flatten()
    parents = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    nonempty = np.asarray(pc.utf8_length(flat).to_numpy(zero_copy_only=False), dtype=np.int64) > 0
    flat = flat.filter(pa.array(nonempty))
    counts = np.bincount(parents[nonempty], minlength=len(normalized))
    offsets = np.zeros(len(normalized) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return flat, offsets


def word_hashes(words: pa.Array) -> np.ndarray:
    """xxh3-64 of every word; each distinct word is hashed once."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.uint64)
    encoded = pc.dictionary_encode(words)
    distinct = encoded.dictionary.to_pylist()
    table = np.fromiter(
        (xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in distinct), dtype=np.uint64, count=len(distinct)
    )
    indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return table[indices]


def shingle_hashes(word_hash: np.ndarray, offsets: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word ``ngram`` of each row, and their row offsets.

    A row with fewer than ``ngram`` words (but at least one) gets one shingle of all
    its words, so short texts still take part in near-duplicate detection.
    """
    counts = np.diff(offsets)
    total = int(offsets[-1])
    rows = np.repeat(np.arange(len(counts)), counts)
    start = offsets[:-1][rows]
    end = offsets[1:][rows]
    pos = np.arange(total, dtype=np.int64)
    valid = (pos + ngram <= end) | ((counts[rows] < ngram) & (pos == start))
    padded = np.concatenate([word_hash, np.zeros(ngram, dtype=np.uint64)])
    acc = np.zeros(total, dtype=np.uint64)
    for k in range(ngram):
        word = np.where(pos + k < end, padded[k : k + total], np.uint64(0))
        acc = acc * _NGRAM_MULT + word
    shingles = _mix64(acc[valid])
    shingle_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[valid], minlength=len(counts)), out=shingle_offsets[1:])
    return shingles, shingle_offsets


def _permute(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a*x + b) mod 2**61-1`` for every shingle (rows) and permutation (columns)."""
    v = x[:, None] * a[None, :]  # < 2**64: both factors are below 2**32
    v = (v & MERSENNE_61) + (v >> _SHIFT_61)
    v = v + b[None, :]
    v = (v & MERSENNE_61) + (v >> _SHIFT_61)
    out: np.ndarray = np.where(v >= MERSENNE_61, v - MERSENNE_61, v)
    return out


def signatures(shingles: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The (rows, num_perm) uint64 MinHash signatures; rows without shingles are all ``EMPTY``."""
    n = len(offsets) - 1
    out = np.full((n, len(a)), EMPTY, dtype=np.uint64)
    if shingles.size == 0:
        return out
    x = shingles >> _SHIFT_32
    rows = np.repeat(np.arange(n), np.diff(offsets))
    step = max(1, _CHUNK_ELEMENTS // len(a))
    for c0 in range(0, shingles.size, step):
        c1 = min(shingles.size, c0 + step)
        values = _permute(x[c0:c1], a, b)
        chunk_rows = rows[c0:c1]
        seg = np.flatnonzero(np.concatenate([[True], chunk_rows[1:] != chunk_rows[:-1]]))
        mins = np.minimum.reduceat(values, seg, axis=0)
        which = chunk_rows[seg]
        out[which] = np.minimum(out[which], mins)
    return out


def text_signatures(
    normalized: pa.Array, ngram: int, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, num_perm) uint64 signatures of normalized texts and each row's word count."""
    if kernels.NATIVE:
        return kernels.minhash_signatures(normalized, ngram, a, b)
    words, offsets = split_words(normalized)
    shingles, shingle_offsets = shingle_hashes(word_hashes(words), offsets, ngram)
    return signatures(shingles, shingle_offsets, a, b), np.diff(offsets)


# Every candidate pair is verified against the threshold afterwards, so a false
# positive costs only a comparison while a false negative is a missed duplicate.
FALSE_POSITIVE_WEIGHT = 0.2
FALSE_NEGATIVE_WEIGHT = 0.8

# A pair at exactly the threshold has an estimated Jaccard below it half the time, so
# pairs are verified against the threshold less VERIFY_Z standard errors of the estimate;
# and the LSH curve is centred LSH_MARGIN below that cut, so that pairs at the threshold
# almost always become candidates. Together: recall >= 0.95 at the threshold (docs/audit.md).
VERIFY_Z = 2.0
LSH_MARGIN = 0.07


def verify_cut(threshold: float, num_perm: int) -> float:
    """The estimated Jaccard a candidate pair needs for a true Jaccard of ``threshold`` to be found."""
    spread = math.sqrt(threshold * (1.0 - threshold) / num_perm)
    return max(0.0, threshold - VERIFY_Z * spread)


def lsh_parameters(threshold: float, num_perm: int) -> tuple[float, int, int]:
    """(verification cut, bands, rows per band) for near duplicates at ``threshold``."""
    cut = verify_cut(threshold, num_perm)
    bands, rows = choose_bands(round(max(0.05, cut - LSH_MARGIN), 4), num_perm)
    return cut, bands, rows


@lru_cache(maxsize=64)
def choose_bands(
    threshold: float,
    num_perm: int,
    fp_weight: float = FALSE_POSITIVE_WEIGHT,
    fn_weight: float = FALSE_NEGATIVE_WEIGHT,
) -> tuple[int, int]:
    """The (bands, rows per band) with ``bands*rows <= num_perm`` minimizing weighted false pos+neg.

    The weights apply to the areas under the banding curve below the threshold (pairs
    that would wrongly become candidates) and above it (pairs that would be missed).
    """
    s = np.linspace(0.0, 1.0, 2001)
    below = s < threshold
    best = (float("inf"), 1, num_perm)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            hit = 1.0 - (1.0 - s**rows) ** bands
            false_pos = float(np.trapezoid(np.where(below, hit, 0.0), s))
            false_neg = float(np.trapezoid(np.where(below, 0.0, 1.0 - hit), s))
            cost = fp_weight * false_pos + fn_weight * false_neg
            if cost < best[0]:
                best = (cost, bands, rows)
    return best[1], best[2]


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per (row, band): equal keys mean the band's signature slice is equal."""
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        acc = np.full(sig.shape[0], np.uint64(band + 1), dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            # One column widened at a time: never a uint64 copy of the whole signature matrix.
            acc = (acc ^ sig[:, col].astype(np.uint64)) * _BAND_MULT
        keys[:, band] = _mix64(acc)
    return keys


def candidate_pairs(keys: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(u < v)`` sharing a band key.

    Inside one bucket each member is paired with the bucket's first row and with
    its predecessor, not with every other member: linear in bucket size, and
    enough to connect the bucket once pairs are verified and clustered.
    """
    idx = np.flatnonzero(valid)
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for band in range(keys.shape[1]):
        k = keys[idx, band]
        order = np.argsort(k, kind="stable")
        sorted_keys = k[order]
        members = idx[order]
        starts = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
        group = np.cumsum(starts) - 1
        first = members[np.flatnonzero(starts)][group]
        follow = np.flatnonzero(~starts)
        us.extend([first[follow], members[follow - 1]])
        vs.extend([members[follow], members[follow]])
    if not us:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    u = np.concatenate(us).astype(np.int64)
    v = np.concatenate(vs).astype(np.int64)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keep = lo != hi
    packed = np.unique(lo[keep] * np.int64(len(valid)) + hi[keep])
    return packed // len(valid), packed % len(valid)


def estimated_jaccard(sig: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The fraction of equal signature entries of each pair (the MinHash Jaccard estimate)."""
    out = np.zeros(len(u), dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, sig.shape[1]))
    for c0 in range(0, len(u), step):
        c1 = min(len(u), c0 + step)
        out[c0:c1] = (sig[u[c0:c1]] == sig[v[c0:c1]]).mean(axis=1)
    return out
