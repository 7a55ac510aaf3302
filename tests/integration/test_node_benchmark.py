"""Benchmark challenges against the real gateway: the throughput the gateway measures and verifies.

Nothing here asserts on how fast the machine is (beyond > 0): a late answer is made late by the
gateway's clock hook, not by sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nexa.contracts.workers import BenchmarkChallenge, BenchmarkRowRef, HardwareProfile, WorkerRegister
from nexa_engines import benchmark_challenge
from nexa_engines.worker_client import WorkerClient
from nexa_gateway.db import NodeBenchmark, Worker, utcnow
from nexa_gateway.services import benchmarks
from tests.integration.gateway_app import WORKER_SECRET, Gateway


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Smaller challenges: the protocol is the same, the tests are quicker."""
    monkeypatch.setattr(benchmarks, "CHALLENGE_N", 256)
    monkeypatch.setattr(benchmarks, "CHALLENGE_REPS", 2)


@pytest.fixture
def late(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[timedelta]]:
    """The gateway's clock, moved forward by whatever the test appends."""
    shift: list[timedelta] = []
    monkeypatch.setattr(benchmarks, "clock", lambda: utcnow() + sum(shift, timedelta()))
    yield shift


class _Through(httpx.BaseTransport):
    """The worker's own HTTP client, sent through the in-process gateway app."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.client.request(
            request.method, request.url.raw_path.decode(), content=request.read(), headers=request.headers
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def _register(gw: Gateway, name: str = "bench-node", **hardware: Any) -> tuple[str, dict[str, str]]:
    body: dict[str, Any] = {"name": name, "hardware": hardware}
    r = gw.client.post(
        "/v1/workers/register", json=body, headers={"Authorization": f"Bearer {WORKER_SECRET}"}
    )
    assert r.status_code == 201, r.text
    return r.json()["worker_id"], {"Authorization": f"Bearer {r.json()['token']}"}


def _issue(gw: Gateway, worker_id: str, headers: dict[str, str]) -> BenchmarkChallenge:
    r = gw.client.post(f"/v1/workers/{worker_id}/benchmark", headers=headers)
    assert r.status_code == 201, r.text
    return BenchmarkChallenge.model_validate(r.json())


def _commit(gw: Gateway, worker_id: str, headers: dict[str, str], challenge_id: str, commitment: str) -> Any:
    return gw.client.post(
        f"/v1/workers/{worker_id}/benchmark/{challenge_id}/commit",
        json={"commitment": commitment},
        headers=headers,
    )


def _prove(gw: Gateway, worker_id: str, headers: dict[str, str], challenge_id: str, proof: Any) -> Any:
    return gw.client.post(
        f"/v1/workers/{worker_id}/benchmark/{challenge_id}/proof",
        json=proof if isinstance(proof, dict) else proof.model_dump(mode="json"),
        headers=headers,
    )


def _shown(gw: Gateway, worker_id: str) -> dict[str, Any]:
    r = gw.client.get(f"/v1/workers/{worker_id}", headers=gw.auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def _records(gw: Gateway, worker_id: str) -> list[NodeBenchmark]:
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        rows = session.scalars(
            select(NodeBenchmark)
            .where(NodeBenchmark.worker_id == worker_id)
            .order_by(NodeBenchmark.issued_at)
        ).all()
        session.expunge_all()
    return list(rows)


def _verified(gw: Gateway, worker_id: str) -> tuple[float | None, bool | None]:
    state = gw.client.app.state.nexa  # type: ignore[attr-defined]
    with state.db.session() as session:
        worker = session.get(Worker, worker_id)
        assert worker is not None
        return benchmarks.verified_gflops(session, worker_id), benchmarks.tier_confirmed(session, worker)


def test_an_honest_node_passes_and_the_registry_shows_the_measured_figure(gateway: Gateway) -> None:
    # The worker's own client and compute, over the gateway app's transport, at the default size.
    client = WorkerClient("http://testserver", WORKER_SECRET, transport=_Through(gateway.client))
    try:
        claimed = HardwareProfile(cpu_gflops=123456.0)  # the node's own probe: a claim
        client.register(WorkerRegister(name="honest", hardware=claimed), retry_for=5)
        assert client.registered is not None
        worker_id = client.registered.worker_id
        assert _shown(gateway, worker_id)["verified_gflops"] is None
        result = benchmark_challenge.run(client)
    finally:
        client.close()
    assert result is not None and result.status == "passed", result
    assert result.gflops is not None and result.gflops > 0
    assert result.seconds is not None and result.seconds > 0
    assert (result.n, result.reps) == (benchmarks.CHALLENGE_N, benchmarks.CHALLENGE_REPS)
    # Throughput is the work over the gateway's own seconds, nothing the node said.
    assert result.gflops == pytest.approx(2 * result.n**3 * result.reps / result.seconds / 1e9)
    shown = _shown(gateway, worker_id)
    assert shown["verified_gflops"] == pytest.approx(result.gflops)
    assert shown["verified_at"] is not None
    assert shown["hardware"]["cpu_gflops"] == 123456.0  # the claim stays beside it, unchanged
    assert shown["tier_confirmed"] is True  # a cpu node
    assert _verified(gateway, worker_id) == (pytest.approx(result.gflops), True)
    (record,) = _records(gateway, worker_id)
    assert record.status == "passed" and record.committed_at is not None and record.commitment
    assert len(record.spot_checks or []) == benchmarks.SPOT_CHECKS


def test_a_gpu_tier_is_not_confirmed_by_a_cpu_benchmark(sqlite_gateway: Gateway, small: None) -> None:
    gw = sqlite_gateway
    worker_id, headers = _register(gw, gpus=1, gpu_type="RTX4090", gpu_memory_gb=24, tier="consumer-gpu")
    challenge = _issue(gw, worker_id, headers)
    computed = benchmark_challenge.compute(challenge)
    spot = _commit(gw, worker_id, headers, challenge.challenge_id, computed.commitment)
    refs = [BenchmarkRowRef.model_validate(r) for r in spot.json()["rows"]]
    done = _prove(
        gw, worker_id, headers, challenge.challenge_id, benchmark_challenge.proof_for(computed, refs)
    )
    assert done.status_code == 200 and done.json()["status"] == "passed", done.text
    shown = _shown(gw, worker_id)
    assert shown["verified_gflops"] is not None and shown["tier_confirmed"] is False


def _random_proof(challenge: BenchmarkChallenge, rows: list[dict[str, int]]) -> tuple[str, dict[str, Any]]:
    """A node that did no work: random rows, with digests and a commitment that are consistent."""
    n, reps = challenge.n, challenge.reps
    made = np.random.default_rng(7).standard_normal((reps, n, n)).astype(np.float32)
    digests = [
        hashlib.sha256(made[r, i].astype("<f4").tobytes()).digest() for r in range(reps) for i in range(n)
    ]
    commitment = hashlib.sha256(b"".join(digests)).hexdigest()
    sent = [
        {
            "rep": ref["rep"],
            "row": ref["row"],
            "values": base64.b64encode(made[ref["rep"] - 1, ref["row"]].astype("<f4").tobytes()).decode(),
        }
        for ref in rows
    ]
    return commitment, {"row_hashes": [d.hex() for d in digests], "rows": sent}


def test_a_node_that_did_not_do_the_work_fails_and_is_recorded(gateway: Gateway, small: None) -> None:
    worker_id, headers = _register(gateway)
    challenge = _issue(gateway, worker_id, headers)
    commitment, _ = _random_proof(challenge, [])
    spot = _commit(gateway, worker_id, headers, challenge.challenge_id, commitment)
    assert spot.status_code == 200, spot.text
    _, proof = _random_proof(challenge, spot.json()["rows"])
    refused = _prove(gateway, worker_id, headers, challenge.challenge_id, proof)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["type"] == "benchmark_failed"
    assert "is not A_" in refused.json()["error"]["message"]
    (record,) = _records(gateway, worker_id)
    assert record.status == "failed" and record.gflops is None and "is not A_" in record.detail
    assert _shown(gateway, worker_id)["verified_gflops"] is None
    assert _verified(gateway, worker_id) == (None, True)
    # A failed proof voids the node's figure: passing later does not restore it.
    challenge = _issue(gateway, worker_id, headers)
    computed = benchmark_challenge.compute(challenge)
    spot = _commit(gateway, worker_id, headers, challenge.challenge_id, computed.commitment)
    refs = [BenchmarkRowRef.model_validate(r) for r in spot.json()["rows"]]
    proof_ok = benchmark_challenge.proof_for(computed, refs)
    assert _prove(gateway, worker_id, headers, challenge.challenge_id, proof_ok).json()["status"] == "passed"
    assert _verified(gateway, worker_id)[0] is None


def test_wrong_rows_and_skipped_work_fail(sqlite_gateway: Gateway, small: None) -> None:
    gw = sqlite_gateway
    cases: dict[str, str] = {}
    for case in ("other rows", "digests not committed", "half the work"):
        worker_id, headers = _register(gw, name=case)
        challenge = _issue(gw, worker_id, headers)
        computed = benchmark_challenge.compute(challenge)
        if case == "half the work":
            # The second product skipped: its rows are zeros, honestly hashed and committed.
            from nexa_store import matmul_challenge

            computed.products[1] = np.zeros_like(computed.products[1])
            computed.digests[challenge.n :] = matmul_challenge.row_digests(computed.products[1])
            computed.commitment = matmul_challenge.commitment(computed.digests)
        spot = _commit(gw, worker_id, headers, challenge.challenge_id, computed.commitment)
        refs = [BenchmarkRowRef.model_validate(r) for r in spot.json()["rows"]]
        if case == "other rows":
            # The rows asked for are answered with other (real) rows of the products.
            refs_sent = [ref.model_copy(update={"row": (ref.row + 1) % challenge.n}) for ref in refs]
            proof = benchmark_challenge.proof_for(computed, refs_sent).model_dump(mode="json")
            for sent, asked in zip(proof["rows"], refs, strict=True):
                sent["row"] = asked.row
        else:
            proof = benchmark_challenge.proof_for(computed, refs).model_dump(mode="json")
            if case == "digests not committed":
                proof["row_hashes"][0] = secrets.token_hex(32)
        refused = _prove(gw, worker_id, headers, challenge.challenge_id, proof)
        assert refused.status_code == 422, (case, refused.text)
        cases[case] = refused.json()["error"]["message"]
        assert _records(gw, worker_id)[0].status == "failed"
    assert "does not match its committed digest" in cases["other rows"]
    assert "do not hash to the commitment" in cases["digests not committed"]
    # 32 rows checked among 2 × 256: the chance that none falls in the skipped half is 2**-32.
    assert "is not A_2" in cases["half the work"]


def test_late_answers_are_refused(gateway: Gateway, small: None, late: list[timedelta]) -> None:
    worker_id, headers = _register(gateway)
    # A commitment after the challenge expired: the challenge is void.
    challenge = _issue(gateway, worker_id, headers)
    computed = benchmark_challenge.compute(challenge)
    late.append(timedelta(seconds=benchmarks.CHALLENGE_TTL_SECONDS + 1))
    refused = _commit(gateway, worker_id, headers, challenge.challenge_id, computed.commitment)
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "benchmark_expired"
    assert [r.status for r in _records(gateway, worker_id)] == ["expired"]
    # A proof after it expired, for a commitment in time: recorded as failed.
    challenge = _issue(gateway, worker_id, headers)
    computed = benchmark_challenge.compute(challenge)
    spot = _commit(gateway, worker_id, headers, challenge.challenge_id, computed.commitment)
    assert spot.status_code == 200, spot.text
    late.append(timedelta(seconds=benchmarks.CHALLENGE_TTL_SECONDS))
    refs = [BenchmarkRowRef.model_validate(r) for r in spot.json()["rows"]]
    proof = benchmark_challenge.proof_for(computed, refs)
    refused = _prove(gateway, worker_id, headers, challenge.challenge_id, proof)
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "benchmark_expired"
    assert [r.status for r in _records(gateway, worker_id)] == ["expired", "failed"]
    assert _verified(gateway, worker_id)[0] is None


def test_a_commitment_left_unproven_counts_as_failed(
    sqlite_gateway: Gateway, small: None, late: list[timedelta]
) -> None:
    # Committing, seeing which rows are checked and walking away would let a node retry until the
    # checks miss the rows it skipped: an unproven commitment is a failure once the challenge expires.
    gw = sqlite_gateway
    worker_id, headers = _register(gw)
    challenge = _issue(gw, worker_id, headers)
    computed = benchmark_challenge.compute(challenge)
    assert _commit(gw, worker_id, headers, challenge.challenge_id, computed.commitment).status_code == 200
    late.append(timedelta(seconds=benchmarks.CHALLENGE_TTL_SECONDS + 1))
    assert _verified(gw, worker_id)[0] is None
    _issue(gw, worker_id, headers)  # a new one may be asked for; the old one is recorded as failed
    assert [r.status for r in _records(gw, worker_id)] == ["failed", "open"]


def test_one_open_challenge_and_no_replays(gateway: Gateway, small: None) -> None:
    worker_id, headers = _register(gateway)
    challenge = _issue(gateway, worker_id, headers)
    again = gateway.client.post(f"/v1/workers/{worker_id}/benchmark", headers=headers)
    assert again.status_code == 409 and again.json()["error"]["type"] == "benchmark_open"
    computed = benchmark_challenge.compute(challenge)
    early = _prove(
        gateway, worker_id, headers, challenge.challenge_id, benchmark_challenge.proof_for(computed, [])
    )
    assert early.status_code == 409 and early.json()["error"]["type"] == "benchmark_not_committed"
    spot = _commit(gateway, worker_id, headers, challenge.challenge_id, computed.commitment)
    assert spot.status_code == 200
    # A second commitment (another result, or the same one) is refused; the picked rows stand.
    for commitment in (secrets.token_hex(32), computed.commitment):
        replay = _commit(gateway, worker_id, headers, challenge.challenge_id, commitment)
        assert replay.status_code == 409 and replay.json()["error"]["type"] == "benchmark_answered"
    refs = [BenchmarkRowRef.model_validate(r) for r in spot.json()["rows"]]
    proof = benchmark_challenge.proof_for(computed, refs)
    first = _prove(gateway, worker_id, headers, challenge.challenge_id, proof)
    assert first.status_code == 200 and first.json()["status"] == "passed", first.text
    replay = _prove(gateway, worker_id, headers, challenge.challenge_id, proof)
    assert replay.status_code == 409 and replay.json()["error"]["type"] == "benchmark_answered"
    assert [r.status for r in _records(gateway, worker_id)] == ["passed"]
    # The next challenge is a new one, with a new seed.
    assert _issue(gateway, worker_id, headers).seed != challenge.seed


def test_a_worker_answers_only_its_own_challenges(gateway: Gateway, small: None) -> None:
    owner_id, owner = _register(gateway, name="owner")
    other_id, other = _register(gateway, name="other")
    challenge = _issue(gateway, owner_id, owner)
    computed = benchmark_challenge.compute(challenge)
    base = f"/v1/workers/{owner_id}/benchmark"
    # With its own token on the owner's routes: refused.
    assert gateway.client.post(base, headers=other).status_code == 403
    as_owner = _commit(gateway, owner_id, other, challenge.challenge_id, computed.commitment)
    assert as_owner.status_code == 403 and as_owner.json()["error"]["type"] == "forbidden"
    # On its own routes, the owner's challenge does not exist.
    as_itself = _commit(gateway, other_id, other, challenge.challenge_id, computed.commitment)
    assert as_itself.status_code == 404
    # A user's API key is not a worker token; no token at all is nothing.
    assert gateway.client.post(base, headers=gateway.auth()).status_code == 401
    assert (
        gateway.client.post(
            f"{base}/{challenge.challenge_id}/commit", json={"commitment": "0" * 64}
        ).status_code
        == 401
    )
    # The owner's challenge is untouched by all that.
    spot = _commit(gateway, owner_id, owner, challenge.challenge_id, computed.commitment)
    assert spot.status_code == 200, spot.text
    refs = [BenchmarkRowRef.model_validate(r) for r in spot.json()["rows"]]
    proof = benchmark_challenge.proof_for(computed, refs)
    stolen = _prove(gateway, other_id, other, challenge.challenge_id, proof)
    assert stolen.status_code == 404
    done = _prove(gateway, owner_id, owner, challenge.challenge_id, proof)
    assert done.status_code == 200 and done.json()["status"] == "passed"
    assert _shown(gateway, other_id)["verified_gflops"] is None
    assert _shown(gateway, owner_id)["verified_gflops"] is not None
