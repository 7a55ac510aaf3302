"""Exact and near-duplicate detection (MinHash, LSH banding, clustering)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash

from nexa_engines.audit import dedup, minhash

VOCAB = [f"w{i}" for i in range(5000)]


def signatures_for(
    texts: list[str], ngram: int = 5, num_perm: int = 128, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    normalized = dedup.normalize_texts(pa.array(texts))
    words, offsets = minhash.split_words(normalized)
    shingles, shingle_offsets = minhash.shingle_hashes(minhash.word_hashes(words), offsets, ngram)
    a, b = minhash.permutations(num_perm, seed)
    return minhash.signatures(shingles, shingle_offsets, a, b), np.diff(offsets) > 0


def random_doc(rng: random.Random, words: int = 120) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(words)]


def test_normalization_ignores_case_punctuation_width_and_spacing() -> None:
    normalized = dedup.normalize_texts(
        pa.array(["Hello,   World!", "hello world", "ＨＥＬＬＯ world.", None])
    )
    assert normalized.to_pylist() == ["hello world", "hello world", "hello world", ""]


def test_exact_duplicates_keep_the_first_occurrence_unflagged() -> None:
    texts = ["alpha beta", "gamma", "Alpha, beta!", "delta", "alpha  beta", "", ""]
    normalized = dedup.normalize_texts(pa.array(texts))
    valid = np.array([bool(t) for t in normalized.to_pylist()])
    first = dedup.first_occurrence(dedup.text_hashes(normalized), valid)
    assert first.tolist() == [0, 1, 0, 3, 0, 5, 6]  # empty rows are never duplicates of each other


def test_hashes_are_128_bit_and_stable() -> None:
    h1 = dedup.text_hashes(pa.array(["same text"]))
    h2 = dedup.text_hashes(pa.array(["same text"]))
    assert h1.shape == (1, 2) and h1.dtype == np.uint64
    assert np.array_equal(h1, h2)


def test_permutations_are_seeded() -> None:
    a1, b1 = minhash.permutations(64, 7)
    a2, b2 = minhash.permutations(64, 7)
    a3, _ = minhash.permutations(64, 8)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and not np.array_equal(a1, a3)
    assert (a1 < (1 << 32)).all() and (b1 < int(minhash.MERSENNE_61)).all()


def test_permutation_is_exact_modular_arithmetic() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1 << 32, size=50, dtype=np.uint64)
    a, b = minhash.permutations(8, 3)
    got = minhash._permute(x, a, b)
    p = (1 << 61) - 1
    want = [[(int(ai) * int(xi) + int(bi)) % p for ai, bi in zip(a, b, strict=True)] for xi in x]
    assert got.tolist() == want


def test_short_rows_get_one_shingle_and_empty_rows_none() -> None:
    sig, valid = signatures_for(["just three words", "", "one two three four five six"])
    assert valid.tolist() == [True, False, True]
    assert (sig[1] == minhash.EMPTY).all()
    assert (sig[0] != minhash.EMPTY).all()


def test_estimates_agree_with_datasketch() -> None:
    rng = random.Random(11)
    base = random_doc(rng, 200)
    texts = [" ".join(base)]
    for changes in (2, 8, 20, 45, 90):
        doc = list(base)
        for pos in rng.sample(range(len(doc)), changes):
            doc[pos] = rng.choice(VOCAB)
        texts.append(" ".join(doc))
    sig, _ = signatures_for(texts, ngram=3, num_perm=256)

    def shingle_set(text: str) -> set[str]:
        w = text.split()
        return {" ".join(w[i : i + 3]) for i in range(len(w) - 2)}

    reference = MinHash(num_perm=256, seed=1)
    reference.update_batch([s.encode() for s in shingle_set(texts[0])])
    for i in range(1, len(texts)):
        other = MinHash(num_perm=256, seed=1)
        other.update_batch([s.encode() for s in shingle_set(texts[i])])
        true = len(shingle_set(texts[0]) & shingle_set(texts[i])) / len(
            shingle_set(texts[0]) | shingle_set(texts[i])
        )
        ours = minhash.estimated_jaccard(sig, np.array([0]), np.array([i]))[0]
        theirs = reference.jaccard(other)
        assert abs(ours - true) < 0.1, (i, ours, true)
        assert abs(ours - theirs) < 0.12, (i, ours, theirs)


@pytest.mark.parametrize(("threshold", "num_perm"), [(0.5, 64), (0.8, 128), (0.9, 256)])
def test_banding_fits_and_centres_near_the_threshold(threshold: float, num_perm: int) -> None:
    bands, rows = minhash.choose_bands(threshold, num_perm)
    assert bands * rows <= num_perm
    assert abs((1 / bands) ** (1 / rows) - threshold) < 0.12

    def hit(s: float) -> float:
        return float(1 - (1 - s**rows) ** bands)

    assert hit(min(1.0, threshold + 0.08)) > 0.9
    assert hit(threshold - 0.35) < 0.1


def test_near_duplicates_cluster_and_unrelated_rows_do_not() -> None:
    rng = random.Random(5)
    originals = [random_doc(rng) for _ in range(40)]
    texts = [" ".join(d) for d in originals]
    planted = {}
    for k in range(10):
        doc = list(originals[k])
        doc[rng.randrange(len(doc))] = "changed"
        planted[len(texts)] = k
        texts.append(" ".join(doc))
    sig, valid = signatures_for(texts)
    bands, rows = minhash.choose_bands(0.8, 128)
    clusters, pairs = dedup.near_duplicate_clusters(sig, valid, 0.8, bands, rows)
    for copy, original in planted.items():
        assert clusters[copy] == original
    assert clusters[:40].tolist() == list(range(40))  # no original joined another original's cluster
    assert pairs == 10


def test_clusters_are_labelled_by_their_lowest_row() -> None:
    labels = dedup.connected_components(7, np.array([5, 1, 4, 6]), np.array([6, 4, 2, 3]))
    assert labels.tolist() == [0, 1, 1, 3, 1, 3, 3]


def test_large_bucket_is_linear_and_still_one_cluster() -> None:
    sig = np.tile(np.arange(128, dtype=np.uint32), (500, 1))
    valid = np.ones(500, dtype=bool)
    keys = minhash.band_keys(sig, 12, 10)
    u, v = minhash.candidate_pairs(keys, valid)
    assert len(u) < 1000  # not the 124,750 pairs of the full bucket
    labels = dedup.connected_components(500, u, v)
    assert (labels == 0).all()
