"""The node's side of a benchmark challenge (docs/mesh.md, "Measured throughput").

After it registers, a worker asks the gateway for a challenge, computes it, commits to the
result, and proves the rows the gateway then asks for. The gateway times the work by its own
clock and records the throughput it verified; the node's own probe (``probe.py``) stays a claim.

It runs once per registration. ``NEXA_WORKER_BENCHMARK=0`` (or ``false``, ``no``, ``off``) turns it
off. A failure is logged and never stops the worker.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nexa.contracts.workers import (
    BENCHMARK_MAX_N,
    BENCHMARK_MAX_REPS,
    BenchmarkChallenge,
    BenchmarkProof,
    BenchmarkResult,
    BenchmarkRow,
    BenchmarkRowRef,
)
from nexa_engines.worker_client import WorkerClient, WorkerClientError
from nexa_store import matmul_challenge
from nexa_store.matmul_challenge import Matrix

log = logging.getLogger("nexa.worker")

ENV_SWITCH = "NEXA_WORKER_BENCHMARK"
_OFF = {"0", "false", "no", "off"}


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the worker runs its benchmark challenge (on unless ``NEXA_WORKER_BENCHMARK`` says off)."""
    return environ.get(ENV_SWITCH, "").strip().lower() not in _OFF


@dataclass
class Computed:
    """The work of one challenge: every product, the digest of each of its rows, the commitment."""

    challenge: BenchmarkChallenge
    products: list[Matrix]  # C_1 first
    digests: list[bytes]
    commitment: str


def compute(challenge: BenchmarkChallenge) -> Computed:
    """Build the matrices from the challenge's seed, multiply, hash each row and commit."""
    if not 2 <= challenge.n <= BENCHMARK_MAX_N or not 1 <= challenge.reps <= BENCHMARK_MAX_REPS:
        raise ValueError(f"a challenge of n={challenge.n}, reps={challenge.reps} is out of bounds")
    products, digests = matmul_challenge.compute(int(challenge.seed, 16), challenge.n, challenge.reps)
    return Computed(challenge, products, digests, matmul_challenge.commitment(digests))


def proof_for(computed: Computed, rows: list[BenchmarkRowRef]) -> BenchmarkProof:
    """Every row digest, and the rows asked for as little-endian float32 bytes (base64)."""
    sent = []
    for ref in rows:
        product = computed.products[ref.rep - 1]
        values = np.ascontiguousarray(product[ref.row], dtype="<f4")
        sent.append(
            BenchmarkRow(rep=ref.rep, row=ref.row, values=base64.b64encode(values.tobytes()).decode("ascii"))
        )
    return BenchmarkProof(row_hashes=[d.hex() for d in computed.digests], rows=sent)


def run(client: WorkerClient) -> BenchmarkResult | None:
    """One challenge, start to end; the verified result, or None (logged) when it did not pass."""
    try:
        challenge = client.benchmark_challenge()
        computed = compute(challenge)
        spot = client.benchmark_commit(challenge.challenge_id, computed.commitment)
        result = client.benchmark_proof(challenge.challenge_id, proof_for(computed, spot.rows))
    except (WorkerClientError, ValueError) as exc:
        log.warning("benchmark challenge not completed (the worker goes on): %s", exc)
        return None
    except Exception:  # never fatal: the worker's jobs matter more than its benchmark
        log.exception("benchmark challenge failed unexpectedly (the worker goes on)")
        return None
    log.info(
        "benchmark verified by the gateway: %.1f GFLOP/s (float32, n=%d, %d products, %.3f s)",
        result.gflops or 0.0,
        result.n,
        result.reps,
        result.seconds or 0.0,
    )
    return result


def run_if_enabled(client: WorkerClient) -> BenchmarkResult | None:
    """``run`` unless ``NEXA_WORKER_BENCHMARK`` turns it off."""
    if not enabled():
        log.info("benchmark challenge skipped (%s is off)", ENV_SWITCH)
        return None
    return run(client)
