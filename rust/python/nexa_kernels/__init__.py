"""Nexa's native data-path kernels; the engines call them through ``nexa_engines.kernels``."""

from nexa_kernels._nexa_kernels import (
    EMPTY_SIGNATURE,
    TEXT_STAT_FIELDS,
    PatternSet,
    __version__,
    ascii_fingerprints,
    minhash_signatures,
    near_duplicate_clusters,
    num_threads,
    pack_first_fit_decreasing,
    position_ids,
    text_hashes,
    text_stats,
)

__all__ = [
    "EMPTY_SIGNATURE",
    "TEXT_STAT_FIELDS",
    "PatternSet",
    "__version__",
    "ascii_fingerprints",
    "minhash_signatures",
    "near_duplicate_clusters",
    "num_threads",
    "pack_first_fit_decreasing",
    "position_ids",
    "text_hashes",
    "text_stats",
]
