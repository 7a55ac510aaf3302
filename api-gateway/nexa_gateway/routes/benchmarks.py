"""Benchmark challenges: a node's throughput measured by the gateway (``services.benchmarks``).

A worker token acts only for its own worker (403 otherwise); another worker's challenge is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from nexa.contracts.workers import (
    BenchmarkChallenge,
    BenchmarkCommit,
    BenchmarkProof,
    BenchmarkResult,
    BenchmarkSpotCheck,
)
from nexa_gateway.deps import CurrentWorker, SessionDep
from nexa_gateway.services import benchmarks

router = APIRouter(prefix="/v1/workers", tags=["workers"])

WorkerIdPath = Annotated[str, Path(min_length=1, max_length=64)]
ChallengeIdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/{worker_id}/benchmark", response_model=BenchmarkChallenge, status_code=201)
def issue_challenge(
    worker_id: WorkerIdPath, worker: CurrentWorker, session: SessionDep
) -> BenchmarkChallenge:
    """A fresh benchmark challenge for this worker (one open at a time; 409 `benchmark_open`). The clock
    starts now: the throughput is measured up to the commitment's arrival."""
    benchmarks.acting_as_itself(worker, worker_id)
    row = benchmarks.issue(session, worker)
    session.commit()
    return benchmarks.challenge_of(row)


@router.post("/{worker_id}/benchmark/{challenge_id}/commit", response_model=BenchmarkSpotCheck)
def commit_challenge(
    worker_id: WorkerIdPath,
    challenge_id: ChallengeIdPath,
    body: BenchmarkCommit,
    worker: CurrentWorker,
    session: SessionDep,
) -> BenchmarkSpotCheck:
    """Commit to the results (SHA-256 over every row digest); the answer names the rows to prove.
    A commitment after the challenge expired (409 `benchmark_expired`) or a second one (409
    `benchmark_answered`) is refused."""
    at = benchmarks.now()  # first: the time the commitment arrived is what is measured
    benchmarks.acting_as_itself(worker, worker_id)
    outcome = benchmarks.commit(session, worker_id, challenge_id, body.commitment, at)
    session.commit()
    if outcome.error is not None:
        raise outcome.error
    return benchmarks.spot_check_of(outcome.row)


@router.post("/{worker_id}/benchmark/{challenge_id}/proof", response_model=BenchmarkResult)
def prove_challenge(
    worker_id: WorkerIdPath,
    challenge_id: ChallengeIdPath,
    body: BenchmarkProof,
    worker: CurrentWorker,
    session: SessionDep,
) -> BenchmarkResult:
    """Prove the commitment with every row digest and the rows asked for. A proof that does not
    check out is recorded and refused (422 `benchmark_failed`); a late one (409 `benchmark_expired`)
    and a second one (409 `benchmark_answered`) too."""
    at = benchmarks.now()
    benchmarks.acting_as_itself(worker, worker_id)
    outcome = benchmarks.prove(session, worker_id, challenge_id, body, at)
    session.commit()
    if outcome.error is not None:
        raise outcome.error
    return benchmarks.result_of(outcome.row)
