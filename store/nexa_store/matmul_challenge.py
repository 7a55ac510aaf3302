"""The arithmetic of a node's benchmark challenge, shared by the node and the gateway (docs/mesh.md).

The gateway hands a node a fresh seed, a size ``n`` and a number of repetitions. From the seed
both sides can build the same float32 matrices: ``B`` (stream 0) and one ``A_r`` per repetition
(stream ``r``, 1-based). The node computes every ``C_r = A_r @ B``, hashes each row of each
``C_r`` (SHA-256 of its little-endian float32 bytes) and commits to the list of row hashes with one
SHA-256 over their concatenation. The gateway then asks for a few rows it picks only after the
commitment arrived, and checks each against its own ``A_r[i, :] @ B`` (O(n²) per row).

The matrices come from the PCG64 bit generator's raw output (seeded through ``SeedSequence`` with
the stream number as its spawn key), turned into floats here, not by ``numpy.random.Generator``:
the bit generator's stream is fixed by its algorithm, so nodes and gateways on different NumPy
versions build the same matrices.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

DIGEST_BYTES = 32
# A row passes when each element is within this fraction of sum_k |a_k| |b_kj| of the exact value.
# Honest float32 arithmetic lands orders of magnitude inside it in any summation order; rounding
# the inputs to TF32, bfloat16 or float16 does not.
ROW_TOLERANCE = 2.0**-16
_SCALE = np.float32(2.0**-23)

Matrix = npt.NDArray[np.float32]


def _stream(seed: int, stream: int) -> np.random.PCG64:
    return np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _floats(raw: npt.NDArray[np.uint64]) -> Matrix:
    """Two floats in [-1, 1) per 64-bit draw (low half first), each from 24 random bits: exact in float32."""
    halves = raw.astype("<u8").view("<u4")
    return (halves >> np.uint32(8)).astype(np.float32) * _SCALE - np.float32(1.0)


def _check_size(n: int) -> None:
    if n < 2 or n % 2:
        raise ValueError(f"n must be an even number of at least 2, not {n}")


def matrix(seed: int, stream: int, n: int) -> Matrix:
    """The ``n``×``n`` float32 matrix of ``stream``: 0 is ``B``, r ≥ 1 is ``A_r``."""
    _check_size(n)
    return _floats(_stream(seed, stream).random_raw(n * n // 2)).reshape(n, n)


def matrix_row(seed: int, stream: int, n: int, row: int) -> Matrix:
    """Row ``row`` of ``matrix(seed, stream, n)``, without building the rest (the generator jumps ahead)."""
    _check_size(n)
    if not 0 <= row < n:
        raise ValueError(f"row {row} is outside 0..{n - 1}")
    bits = _stream(seed, stream)
    bits.advance(row * n // 2)
    return _floats(bits.random_raw(n // 2))


def row_digest(values: npt.NDArray[np.floating]) -> bytes:
    """SHA-256 of one row as little-endian float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).digest()


def row_digests(product: npt.NDArray[np.floating]) -> list[bytes]:
    """The digest of each row of one product ``C_r``."""
    rows = np.ascontiguousarray(product, dtype="<f4")
    return [hashlib.sha256(rows[i].tobytes()).digest() for i in range(rows.shape[0])]


def commitment(digests: Sequence[bytes]) -> str:
    """The commitment (hex): SHA-256 over the row digests, repetition by repetition, row by row."""
    joined = hashlib.sha256()
    for digest in digests:
        if len(digest) != DIGEST_BYTES:
            raise ValueError("a row digest is 32 bytes")
        joined.update(digest)
    return joined.hexdigest()


class RowChecker:
    """Checks rows of the products of one challenge against the gateway's own arithmetic: builds
    ``B`` once, then each asked-for row of ``A_r`` alone (O(n²) work per row)."""

    def __init__(self, seed: int, n: int) -> None:
        self.seed = seed
        self.n = n
        self._b = matrix(seed, 0, n).astype(np.float64)
        self._abs_b = np.abs(self._b)

    def expected(self, rep: int, row: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(row ``row`` of ``C_rep`` in float64, the tolerance of each of its elements)."""
        a = matrix_row(self.seed, rep, self.n, row).astype(np.float64)
        return a @ self._b, ROW_TOLERANCE * (np.abs(a) @ self._abs_b)

    def matches(self, rep: int, row: int, values: npt.NDArray[np.floating]) -> bool:
        """Whether ``values`` is ``A_rep[row] @ B`` as float32 arithmetic computes it (any summation order)."""
        got = np.asarray(values, dtype=np.float64)
        if got.shape != (self.n,) or not np.all(np.isfinite(got)):
            return False
        exact, tolerance = self.expected(rep, row)
        return bool(np.all(np.abs(got - exact) <= tolerance))


def flops(n: int, reps: int) -> int:
    """Floating-point operations the challenge asks for: one multiply and one add per term."""
    return 2 * n**3 * reps


def gflops(n: int, reps: int, seconds: float) -> float:
    """Throughput in GFLOP/s, over ``seconds`` as the gateway measured them."""
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"seconds must be positive and finite, not {seconds}")
    return flops(n, reps) / seconds / 1e9


def compute(seed: int, n: int, reps: int) -> tuple[list[Matrix], list[bytes]]:
    """The node's work: every ``C_r`` (r = 1..reps, index r-1) and the digest of each of their rows."""
    b = matrix(seed, 0, n)
    products: list[Matrix] = []
    digests: list[bytes] = []
    for rep in range(1, reps + 1):
        product = matrix(seed, rep, n) @ b
        products.append(product)
        digests.extend(row_digests(product))
    return products, digests
