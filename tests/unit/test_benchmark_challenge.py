"""The benchmark challenge's arithmetic (``nexa_store.matmul_challenge``) and the node's side of it."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nexa.contracts.workers import BenchmarkChallenge, BenchmarkRowRef
from nexa_engines import benchmark_challenge
from nexa_gateway.services.benchmarks import CPU, GPU, Verified, confirms_tier
from nexa_store import matmul_challenge as mc

SEED = int("0123456789abcdef0123456789abcdef", 16)


def test_the_matrices_are_a_function_of_the_seed_and_stream_alone() -> None:
    a = mc.matrix(SEED, 1, 64)
    assert a.dtype == np.float32 and a.shape == (64, 64)
    assert np.array_equal(a, mc.matrix(SEED, 1, 64))
    assert not np.array_equal(a, mc.matrix(SEED, 2, 64))  # another product's A
    assert not np.array_equal(a, mc.matrix(SEED + 1, 1, 64))  # another seed
    assert float(a.min()) >= -1.0 and float(a.max()) < 1.0
    # Each value is a multiple of 2**-23: exact in float32 whatever the platform.
    assert np.array_equal(np.round(a.astype(np.float64) * 2**23), a.astype(np.float64) * 2**23)


def test_the_stream_is_pinned() -> None:
    # PCG64's raw stream is fixed by the algorithm: a NumPy upgrade that changed it would fail here,
    # before nodes and gateways on different versions disagree.
    b = mc.matrix(SEED, 0, 4)
    digest = hashlib.sha256(np.ascontiguousarray(b, dtype="<f4").tobytes()).hexdigest()
    assert digest == PINNED_B4


def test_a_row_alone_is_the_row_of_the_whole_matrix() -> None:
    full = mc.matrix(SEED, 3, 96)
    for row in (0, 1, 47, 95):
        assert np.array_equal(mc.matrix_row(SEED, 3, 96, row), full[row])
    with pytest.raises(ValueError):
        mc.matrix_row(SEED, 3, 96, 96)
    with pytest.raises(ValueError):
        mc.matrix(SEED, 0, 7)  # odd sizes are refused


def test_the_commitment_binds_every_row_in_order() -> None:
    products, digests = mc.compute(SEED, 32, 2)
    assert len(products) == 2 and len(digests) == 64
    assert digests[33] == mc.row_digest(products[1][1])
    assert digests[0] == hashlib.sha256(products[0][0].astype("<f4").tobytes()).digest()
    root = mc.commitment(digests)
    assert root == hashlib.sha256(b"".join(digests)).hexdigest()
    swapped = [digests[1], digests[0], *digests[2:]]
    assert mc.commitment(swapped) != root
    changed = products[0][5].copy()
    changed[0] = np.nextafter(changed[0], np.float32(np.inf))  # one ulp of one element
    assert mc.row_digest(changed) != digests[5]
    with pytest.raises(ValueError):
        mc.commitment([b"short"])


def test_the_row_check_accepts_float32_in_any_order_and_nothing_else() -> None:
    n = 256
    products, _ = mc.compute(SEED, n, 2)
    checker = mc.RowChecker(SEED, n)
    assert checker.matches(2, 17, products[1][17])
    # Another summation order (a naive running sum in float32) passes too.
    a, b = mc.matrix(SEED, 1, n), mc.matrix(SEED, 0, n)
    naive = np.zeros(n, dtype=np.float32)
    for k in range(n):
        naive += a[9, k] * b[k]
    assert checker.matches(1, 9, naive)
    # Wrong rows fail: another row, another product's row, a small error, a lower precision.
    assert not checker.matches(1, 9, products[0][10])
    assert not checker.matches(1, 9, products[1][9])
    nudged = products[0][9].copy()
    nudged[3] += 0.01
    assert not checker.matches(1, 9, nudged)
    halves = (a[9].astype(np.float16).astype(np.float32) @ b.astype(np.float16).astype(np.float32)).astype(
        np.float32
    )
    assert not checker.matches(1, 9, halves)
    assert not checker.matches(1, 9, np.full(n, np.nan, dtype=np.float32))
    assert not checker.matches(1, 9, products[0][9][:-1])


def test_throughput_is_the_flops_over_the_gateways_seconds() -> None:
    assert mc.flops(1024, 4) == 4 * 2 * 1024**3
    assert mc.gflops(1000, 2, 0.5) == pytest.approx(2 * 2 * 1000**3 / 0.5 / 1e9)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            mc.gflops(1000, 2, bad)


def _challenge(n: int = 32, reps: int = 2) -> BenchmarkChallenge:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return BenchmarkChallenge(
        challenge_id="bch_x",
        worker_id="wrk_x",
        seed=f"{SEED:032x}",
        n=n,
        reps=reps,
        spot_checks=4,
        issued_at=at,
        expires_at=at + timedelta(minutes=5),
    )


def test_the_nodes_proof_carries_every_digest_and_the_rows_asked_for() -> None:
    computed = benchmark_challenge.compute(_challenge())
    refs = [BenchmarkRowRef(rep=2, row=31), BenchmarkRowRef(rep=1, row=0)]
    proof = benchmark_challenge.proof_for(computed, refs)
    assert len(proof.row_hashes) == 64
    assert mc.commitment([bytes.fromhex(h) for h in proof.row_hashes]) == computed.commitment
    sent = np.frombuffer(base64.b64decode(proof.rows[0].values), dtype="<f4")
    assert (proof.rows[0].rep, proof.rows[0].row) == (2, 31)
    assert mc.RowChecker(SEED, 32).matches(2, 31, sent)
    with pytest.raises(ValueError):
        benchmark_challenge.compute(_challenge(n=4096))


def test_the_switch() -> None:
    assert benchmark_challenge.enabled({})
    assert benchmark_challenge.enabled({"NEXA_WORKER_BENCHMARK": "1"})
    for off in ("0", "false", "No", " off "):
        assert not benchmark_challenge.enabled({"NEXA_WORKER_BENCHMARK": off})


def test_which_tiers_benchmarks_confirm() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    cpu, gpu = {CPU: Verified(50.0, at)}, {GPU: Verified(5e4, at)}
    assert confirms_tier("cpu", {}) is True
    assert confirms_tier(None, {}) is True
    assert confirms_tier("consumer-gpu", cpu) is False  # a CPU figure says nothing about a GPU
    assert confirms_tier("hpc", {}) is False
    assert confirms_tier("hpc", gpu) is True
    assert confirms_tier("a100-pool", cpu) is None  # a tier name with no rule


PINNED_B4 = "c7986cd408c68a31a8814617b5f4be496b45f291174407a00d373016abe18da8"


def test_a_benchmark_that_cannot_run_never_stops_the_worker() -> None:
    import httpx

    from nexa.contracts.workers import WorkerRegister
    from nexa_engines.worker_client import WorkerClient, WorkerClientError

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/workers/register":
            body = {
                "worker_id": "wrk_a",
                "token": "nexaw_x",
                "lease_seconds": 60,
                "heartbeat_seconds": 10,
                "artifact_store": {"kind": "gateway"},
            }
            return httpx.Response(201, json=body)
        if request.url.path == "/v1/workers/wrk_a/benchmark":  # a gateway from before benchmarks
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "Not Found"}})
        return httpx.Response(200, text="not json")  # never reached

    client = WorkerClient("http://gw.test", "s", transport=httpx.MockTransport(handler))
    with pytest.raises(WorkerClientError):  # not registered yet
        client.benchmark_challenge()
    assert benchmark_challenge.run(client) is None
    client.register(WorkerRegister(name="n"), retry_for=1)
    assert benchmark_challenge.run(client) is None
    client.close()
