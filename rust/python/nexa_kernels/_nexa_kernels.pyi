"""Native kernels (Rust, PyO3). Inputs are read in place, outputs are written into arrays the caller allocates."""

from typing import Any, Final, Protocol, final

from typing_extensions import Buffer

class _ArrowArray(Protocol):
    """What the kernels read of a pyarrow string, large_string, binary or large_binary array."""

    @property
    def type(self) -> Any: ...
    @property
    def offset(self) -> int: ...
    def buffers(self) -> list[Any]: ...
    def __len__(self) -> int: ...

__all__ = [
    "__version__",
    "PatternSet",
    "ascii_fingerprints",
    "EMPTY_SIGNATURE",
    "TEXT_STAT_FIELDS",
    "minhash_signatures",
    "near_duplicate_clusters",
    "num_threads",
    "pack_first_fit_decreasing",
    "position_ids",
    "text_hashes",
    "text_stats",
]

__version__: Final[str]
TEXT_STAT_FIELDS: Final[tuple[str, ...]]
EMPTY_SIGNATURE: Final[int]

def minhash_signatures(
    texts: _ArrowArray, ngram: int, a: Buffer, b: Buffer, out: Buffer, word_counts: Buffer
) -> None:
    """MinHash signatures of word n-gram shingles for every row of a pyarrow string array."""

def ascii_fingerprints(
    texts: _ArrowArray,
    ngram: int,
    a: Buffer,
    b: Buffer,
    signatures: Buffer,
    hashes: Buffer,
    word_counts: Buffer,
    handled: Buffer,
) -> None:
    """Normalize every ASCII row as the audit does, then hash it and compute its signature."""

@final
class PatternSet:
    """Regular expressions compiled once (ASCII classes and word boundaries, as in RE2)."""

    def __new__(cls, patterns: list[str]) -> PatternSet: ...
    def __len__(self) -> int:
        """Number of patterns."""
    def matches(self, texts: _ArrowArray, out: Buffer) -> None:
        """Which patterns match each row, into a bool (rows, patterns) array."""

def text_hashes(texts: _ArrowArray, out: Buffer) -> None:
    """The 128-bit xxh3 hash of every row's bytes, as (high, low) uint64 pairs."""

def near_duplicate_clusters(
    signatures: Buffer,
    num_perm: int,
    valid: Buffer,
    threshold: float,
    bands: int,
    rows_per_band: int,
    labels: Buffer,
) -> int:
    """Cluster rows by LSH over their signatures; writes labels, returns the verified pair count."""

def text_stats(texts: _ArrowArray, out: Buffer) -> None:
    """Per-row text statistics (columns named by `TEXT_STAT_FIELDS`) into an int64 (rows, fields) array."""

def pack_first_fit_decreasing(lengths: Buffer, capacity: int, bins: Buffer, offsets: Buffer) -> int:
    """First-fit-decreasing packing of int64 lengths into bins of `capacity`; returns the bin count."""

def position_ids(
    lengths: Buffer, bins: Buffer, offsets: Buffer, capacity: int, pad: int, out: Buffer
) -> None:
    """Position ids of packed sequences into an int32 (bins, capacity) array, `pad` where no token is."""

def num_threads() -> int:
    """Number of threads the kernels run on."""
