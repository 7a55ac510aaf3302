"""A node's throughput as the gateway measures it: benchmark challenges it issues and verifies.

The protocol (docs/mesh.md, "Measured throughput"):

1. **Issue.** The gateway records a challenge for the node: a fresh 128-bit seed, ``n`` and
   ``reps``, and the time it issued it (its own wall clock, kept in the database so that any
   gateway replica can finish the challenge).
2. **Commit.** The node builds A_1..A_reps and B from the seed (``nexa_store.matmul_challenge``),
   computes every C_r = A_r @ B and sends one SHA-256 over the digests of all their rows. The time
   between issuing and receiving this is what is measured. Only then does the gateway pick which
   rows it will check (``SPOT_CHECKS`` of the reps × n, uniformly, from the OS CSPRNG).
3. **Prove.** The node sends every row digest and the rows asked for. The gateway checks the
   digests against the commitment, each row against its digest, and each row against its own
   A_r[i, :] @ B. Throughput = reps × 2n³ / seconds, and it is recorded as passed or failed.

A node that skipped a fraction s of the rows passes with probability (1 - s)^SPOT_CHECKS at most.
A commitment the node does not back with a proof in time counts as a failed proof, and a failed
proof voids the node's verified figure: it cannot retry until the spot checks miss what it skipped.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from nexa.contracts.workers import (
    BenchmarkChallenge,
    BenchmarkProof,
    BenchmarkResult,
    BenchmarkRowRef,
    BenchmarkSpotCheck,
)
from nexa_gateway.db import NodeBenchmark, Worker, WorkerKey, utcnow
from nexa_gateway.errors import ApiError, conflict, not_found

CHALLENGE_N = 1024  # float32: 4 MiB a matrix
CHALLENGE_REPS = 4
SPOT_CHECKS = 32
CHALLENGE_TTL_SECONDS = 300
CPU = "cpu"
GPU = "gpu"
GPU_TIERS = frozenset({"consumer-gpu", "hpc"})

OPEN, COMMITTED, PASSED, FAILED, EXPIRED = "open", "committed", "passed", "failed", "expired"

# The gateway's clock; a test may replace it (a late answer without sleeping).
clock: Callable[[], datetime] = utcnow


def now() -> datetime:
    return clock()


@dataclass(frozen=True)
class Verified:
    gflops: float
    verified_at: datetime


@dataclass
class Outcome:
    """What a step recorded, and the error to answer with once it is committed (a refusal that
    changes the record: a late or failed proof)."""

    row: NodeBenchmark
    error: ApiError | None = None


def _new_id() -> str:
    return "bch_" + base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def _arithmetic() -> Any:
    """``nexa_store.matmul_challenge`` (it needs NumPy, which a gateway-only install may lack)."""
    try:
        from nexa_store import matmul_challenge
    except ImportError as exc:  # pragma: no cover - the test environment has NumPy
        raise ApiError(
            503, "benchmark_unavailable", f"this gateway cannot verify benchmarks ({exc}): install numpy"
        ) from exc
    return matmul_challenge


def acting_as_itself(worker: Worker, worker_id: str) -> None:
    """A worker's token speaks for that worker alone."""
    if worker.id != worker_id:
        raise ApiError(403, "forbidden", "a worker may act only as itself: this token is another worker's")


def issue(session: Session, worker: Worker) -> NodeBenchmark:
    """A new challenge for ``worker``; 409 ``benchmark_open`` while another is open."""
    _arithmetic()
    at = now()
    # Serializes challenges of one worker on PostgreSQL (SQLite's writers are serialized already).
    session.execute(select(Worker.id).where(Worker.id == worker.id).with_for_update())
    for row in session.scalars(
        select(NodeBenchmark).where(
            NodeBenchmark.worker_id == worker.id, NodeBenchmark.status.in_((OPEN, COMMITTED))
        )
    ):
        if at < row.expires_at:
            raise conflict(
                "benchmark_open",
                f"challenge {row.id} is still open until {row.expires_at.isoformat()}: answer it first",
            )
        _lapse(row)
    row = NodeBenchmark(
        id=_new_id(),
        worker_id=worker.id,
        kind=CPU,
        status=OPEN,
        seed=secrets.token_hex(16),
        n=CHALLENGE_N,
        reps=CHALLENGE_REPS,
        issued_at=at,
        expires_at=at + timedelta(seconds=CHALLENGE_TTL_SECONDS),
    )
    session.add(row)
    session.flush()
    return row


def _lapse(row: NodeBenchmark) -> None:
    """A challenge past its time: void if never committed, failed if committed and never proven."""
    if row.status == OPEN:
        row.status, row.detail = EXPIRED, "no commitment before the challenge expired"
    elif row.status == COMMITTED:
        row.status, row.detail = FAILED, "committed, but no proof before the challenge expired"


def _challenge(session: Session, worker_id: str, challenge_id: str) -> NodeBenchmark:
    row = session.scalar(
        select(NodeBenchmark).where(NodeBenchmark.id == challenge_id, NodeBenchmark.worker_id == worker_id)
    )
    if row is None:
        raise not_found("benchmark challenge", challenge_id)
    return row


def _late(row: NodeBenchmark) -> ApiError:
    return conflict("benchmark_expired", f"challenge {row.id} expired at {row.expires_at.isoformat()}")


def _answered(row: NodeBenchmark) -> ApiError:
    return conflict("benchmark_answered", f"challenge {row.id} was already answered ({row.status})")


def _swap(session: Session, row: NodeBenchmark, expected: str, values: dict[str, Any]) -> bool:
    """Move ``row`` out of ``expected`` only if nobody else did: one answer per step, even concurrently."""
    done = session.execute(
        update(NodeBenchmark)
        .where(NodeBenchmark.id == row.id, NodeBenchmark.status == expected)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(done, "rowcount", 0) != 1:
        return False
    session.refresh(row)
    return True


def commit(session: Session, worker_id: str, challenge_id: str, commitment: str, at: datetime) -> Outcome:
    """Record the node's commitment, received at ``at``, and pick the rows to check."""
    row = _challenge(session, worker_id, challenge_id)
    if row.status == EXPIRED:
        raise _late(row)
    if row.status != OPEN:
        raise _answered(row)
    seconds = (at - row.issued_at).total_seconds()
    if at >= row.expires_at or seconds <= 0:
        detail = (
            "no commitment before the challenge expired"
            if seconds > 0
            else "the gateway's clock went back while the challenge was open"
        )
        if not _swap(session, row, OPEN, {"status": EXPIRED, "detail": detail}):
            raise _answered(row)
        return Outcome(row, _late(row))
    picked = secrets.SystemRandom().sample(range(row.reps * row.n), min(SPOT_CHECKS, row.reps * row.n))
    checks = [[1 + index // row.n, index % row.n] for index in sorted(picked)]
    values = {
        "status": COMMITTED,
        "commitment": commitment,
        "committed_at": at,
        "seconds": seconds,
        "spot_checks": checks,
    }
    if not _swap(session, row, OPEN, values):
        raise _answered(row)
    return Outcome(row)


def prove(
    session: Session, worker_id: str, challenge_id: str, proof: BenchmarkProof, at: datetime
) -> Outcome:
    """Check the node's proof; record the challenge as passed or failed (422 ``benchmark_failed``)."""
    row = _challenge(session, worker_id, challenge_id)
    if row.status == OPEN:
        if at >= row.expires_at:
            raise _late(row)
        raise conflict("benchmark_not_committed", f"challenge {row.id} has no commitment yet: commit first")
    if row.status == EXPIRED:
        raise _late(row)
    if row.status != COMMITTED:
        raise _answered(row)
    if at >= row.expires_at:
        if not _swap(
            session,
            row,
            COMMITTED,
            {"status": FAILED, "detail": "the proof came after the challenge expired"},
        ):
            raise _answered(row)
        return Outcome(row, _late(row))
    problem = _verify(row, proof)
    if problem is None:
        gflops = _arithmetic().gflops(row.n, row.reps, float(row.seconds or 0.0))
        values = {"status": PASSED, "gflops": gflops, "verified_at": at, "detail": ""}
    else:
        values = {"status": FAILED, "verified_at": at, "detail": problem}
    if not _swap(session, row, COMMITTED, values):
        raise _answered(row)
    if problem is not None:
        return Outcome(row, ApiError(422, "benchmark_failed", f"the benchmark proof failed: {problem}"))
    return Outcome(row)


def _verify(row: NodeBenchmark, proof: BenchmarkProof) -> str | None:
    """None when the proof holds; else what is wrong with it."""
    arithmetic = _arithmetic()
    n, reps = row.n, row.reps
    if len(proof.row_hashes) != reps * n:
        return f"{len(proof.row_hashes)} row digests, for {reps * n} rows"
    digests = [bytes.fromhex(h) for h in proof.row_hashes]
    if arithmetic.commitment(digests) != row.commitment:
        return "the row digests do not hash to the commitment"
    asked = {(int(rep), int(index)) for rep, index in row.spot_checks or []}
    sent = {(r.rep, r.row): r.values for r in proof.rows}
    if len(sent) != len(proof.rows) or set(sent) != asked:
        return "the proof must hold exactly the rows asked for, once each"
    checker = arithmetic.RowChecker(int(row.seed, 16), n)
    import numpy as np

    for rep, index in sorted(asked):
        try:
            raw = base64.b64decode(sent[(rep, index)], validate=True)
        except (binascii.Error, ValueError):
            return f"row {index} of C_{rep} is not base64"
        if len(raw) != 4 * n:
            return f"row {index} of C_{rep} has {len(raw)} bytes, not {4 * n}"
        values = np.frombuffer(raw, dtype="<f4")
        if arithmetic.row_digest(values) != digests[(rep - 1) * n + index]:
            return f"row {index} of C_{rep} does not match its committed digest"
        if not checker.matches(rep, index, values):
            return f"row {index} of C_{rep} is not A_{rep}[{index}, :] @ B"
    return None


def verified_for(session: Session, worker_ids: Iterable[str]) -> dict[str, dict[str, Verified]]:
    """Per worker and benchmark kind: its latest passed result, unless any of that kind failed, by
    that worker or by any other registration of the same node key (registering again wipes nothing)."""
    ids = list(worker_ids)
    if not ids:
        return {}
    at = now()
    keyed = dict(
        session.execute(
            select(WorkerKey.worker_id, WorkerKey.public_key).where(WorkerKey.worker_id.in_(ids))
        ).all()
    )
    identity: dict[str, str] = {w: str(keyed.get(w) or w) for w in ids}
    if keyed:
        for other, public_key in session.execute(
            select(WorkerKey.worker_id, WorkerKey.public_key).where(
                WorkerKey.public_key.in_(set(keyed.values()))
            )
        ):
            identity.setdefault(str(other), str(public_key))
    passed: dict[tuple[str, str], Verified] = {}
    void: set[tuple[str, str]] = set()
    rows = session.execute(
        select(
            NodeBenchmark.worker_id,
            NodeBenchmark.kind,
            NodeBenchmark.status,
            NodeBenchmark.gflops,
            NodeBenchmark.verified_at,
            NodeBenchmark.expires_at,
        )
        .where(
            NodeBenchmark.worker_id.in_(list(identity)), NodeBenchmark.status.in_((PASSED, FAILED, COMMITTED))
        )
        .order_by(NodeBenchmark.verified_at)
    )
    for worker_id, kind, status, gflops, verified_at, expires_at in rows:
        key = (str(worker_id), str(kind))
        if status == FAILED or (status == COMMITTED and expires_at <= at):
            void.add((identity[str(worker_id)], str(kind)))
        elif status == PASSED and gflops is not None and verified_at is not None:
            latest = passed.get(key)
            if latest is None or verified_at >= latest.verified_at:
                passed[key] = Verified(float(gflops), verified_at)
    out: dict[str, dict[str, Verified]] = {}
    for (worker_id, kind), found in passed.items():
        if worker_id in ids and (identity[worker_id], kind) not in void:
            out.setdefault(worker_id, {})[kind] = found
    return out


def verified_gflops(session: Session, worker_id: str) -> float | None:
    """The float32 GFLOP/s of the worker's latest passed CPU benchmark; None before one passed, and
    None once one of its proofs failed (or a commitment of its was never proven in time)."""
    found = verified_for(session, [worker_id]).get(worker_id, {}).get(CPU)
    return found.gflops if found is not None else None


def confirms_tier(tier: str | None, verified: dict[str, Verified]) -> bool | None:
    """Whether benchmarks confirm ``tier``: ``cpu`` (and no tier, which means cpu) always; ``consumer-gpu``
    and ``hpc`` only with a passed GPU benchmark; None for any other tier name (no rule for it)."""
    if tier is None or tier == "cpu":
        return True
    if tier in GPU_TIERS:
        return GPU in verified
    return None


def tier_confirmed(session: Session, worker: Worker) -> bool | None:
    """``confirms_tier`` for the tier ``worker`` registered with (pinned or derived from its profile)."""
    tier = (worker.hardware or {}).get("tier")
    return confirms_tier(tier, verified_for(session, [worker.id]).get(worker.id, {}))


def challenge_of(row: NodeBenchmark) -> BenchmarkChallenge:
    return BenchmarkChallenge(
        challenge_id=row.id,
        worker_id=row.worker_id,
        seed=row.seed,
        n=row.n,
        reps=row.reps,
        spot_checks=min(SPOT_CHECKS, row.n * row.reps),
        issued_at=row.issued_at,
        expires_at=row.expires_at,
    )


def spot_check_of(row: NodeBenchmark) -> BenchmarkSpotCheck:
    return BenchmarkSpotCheck(
        challenge_id=row.id,
        rows=[BenchmarkRowRef(rep=int(rep), row=int(index)) for rep, index in row.spot_checks or []],
        seconds=float(row.seconds or 0.0),
        expires_at=row.expires_at,
    )


def result_of(row: NodeBenchmark) -> BenchmarkResult:
    return BenchmarkResult(
        challenge_id=row.id,
        worker_id=row.worker_id,
        status=row.status,
        gflops=row.gflops,
        n=row.n,
        reps=row.reps,
        seconds=row.seconds,
        verified_at=row.verified_at or now(),
        detail=row.detail,
    )
