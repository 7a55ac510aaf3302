"""The mesh's verification, credits and leaderboard (docs/mesh.md)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import select

from nexa.contracts.billing import LedgerVerification
from nexa.contracts.keys import Role
from nexa.contracts.mesh import CreditEntry, Leaderboard, LeaderboardRow, NodeCredits, VerificationStatus
from nexa.contracts.workers import WorkerList
from nexa_gateway.db import NodeRecord, Worker, WorkerOwner, utcnow
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep
from nexa_gateway.routes import registry as registry_routes
from nexa_gateway.services import ledger, meshpolicy, registry, reputation, verification
from nexa_gateway.services.meshpolicy import DAY

router = APIRouter(tags=["mesh"])

# NEXAPod's node list: the registry's own handler (one answer, one auth rule).
router.add_api_route(
    "/nodes",
    registry_routes.list_workers,
    methods=["GET"],
    response_model=WorkerList,
    name="nexapod_nodes",
    summary="The node registry (NEXAPod path of GET /v1/workers)",
)

IdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/v1/jobs/{job_id}/verification", response_model=VerificationStatus)
def job_verification(job_id: IdPath, principal: CurrentPrincipal, session: SessionDep) -> VerificationStatus:
    """A verified (or spot-checked) job's replicas: which node ran each, its output digest and verdict."""
    status = verification.status(
        session, principal.tenant_id, job_id, see_all_nodes=principal.role.at_least(Role.platform_admin)
    )
    session.commit()
    return status


def _credits(
    session: SessionDep, state: StateDep, principal: CurrentPrincipal, worker_id: str, history: int
) -> NodeCredits:
    # Who may see a node's record is who may see the node (services.registry).
    info = registry.get_worker(
        session, principal.tenant_id, principal.role, state.settings.lease_seconds, worker_id
    )
    key = reputation.node_key_of(session, worker_id)
    row = session.get(NodeRecord, key)
    half_life = state.settings.reputation_half_life_days * DAY
    worker = session.get(Worker, worker_id)
    policy = meshpolicy.credit_policy(state.settings)
    entries = [
        CreditEntry(
            seq=e.seq,
            kind="credit" if e.kind == "credit" else "penalty",
            credits=float(e.payload.get("credits", 0.0)),
            job_id=e.payload.get("job_id"),
            reason=str(e.payload.get("reason", "")),
            at=e.created_at,
        )
        for e in reputation.entries(session, key, history)
    ]
    answer = NodeCredits(
        worker_id=worker_id,
        name=info.name,
        tier=meshpolicy.confirmed_tier(session, worker) if worker is not None else "cpu",
        verified_gflops=policy.gflops(session, worker_id),
        entries=entries,
        **reputation.summary(row, utcnow(), half_life),
    )
    session.commit()
    return answer


@router.get("/v1/credits/{worker_id}", response_model=NodeCredits)
def credits(
    worker_id: IdPath,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    history: Annotated[int, Query(ge=0, le=500, description="Latest ledger entries to list.")] = 50,
) -> NodeCredits:
    """A node's credit balance, reputation and latest credit entries."""
    return _credits(session, state, principal, worker_id, history)


@router.get("/credits/{node_id}", response_model=NodeCredits, name="nexapod_credits")
def nexapod_credits(
    node_id: IdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> NodeCredits:
    """A node's credit balance (NEXAPod path)."""
    return _credits(session, state, principal, node_id, 50)


@router.get("/v1/credits/{worker_id}/verify", response_model=LedgerVerification)
def verify_credits(
    worker_id: IdPath, principal: CurrentPrincipal, session: SessionDep, state: StateDep
) -> LedgerVerification:
    """Walk the node's credit stream: every entry's hash chain, and the balance against the entries."""
    registry.get_worker(session, principal.tenant_id, principal.role, state.settings.lease_seconds, worker_id)
    result = ledger.verify(session, reputation.credit_stream(reputation.node_key_of(session, worker_id)))
    session.commit()
    return LedgerVerification(
        stream=result.stream, entries=result.entries, ok=result.ok, problem=result.problem
    )


@router.get("/v1/leaderboard", response_model=Leaderboard, responses={200: {"content": {"text/csv": {}}}})
def leaderboard(
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[Literal["json", "csv"], Query(description="'csv' exports the table.")] = "json",
) -> Leaderboard | Response:
    """Nodes by credits. Every key sees the ranking; a node's id and name only where the key may see
    the node (its tenant's own, or all for a platform admin): others are shown as 'another node'."""
    half_life = state.settings.reputation_half_life_days * DAY
    now = utcnow()
    found = session.execute(
        select(NodeRecord, Worker, WorkerOwner.tenant_id)
        .join(Worker, Worker.id == NodeRecord.worker_id)
        .outerjoin(WorkerOwner, WorkerOwner.worker_id == Worker.id)
        .order_by(NodeRecord.credits.desc(), NodeRecord.verified_jobs.desc(), NodeRecord.node_key)
        .limit(limit)
    ).all()
    admin = principal.role.at_least(Role.platform_admin)
    rows = []
    for rank, (record, worker, owner) in enumerate(found, start=1):
        shown = admin or owner == principal.tenant_id
        rows.append(
            LeaderboardRow(
                rank=rank,
                worker_id=worker.id if shown else "",
                name=worker.name if shown else "another node",
                tier=str((worker.hardware or {}).get("tier") or "cpu"),
                credits=record.credits,
                verified_jobs=record.verified_jobs,
                reputation=reputation.current(record, now, half_life),
            )
        )
    session.commit()
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["rank", "worker_id", "name", "tier", "credits", "verified_jobs", "reputation"])
        for r in rows:
            writer.writerow([r.rank, r.worker_id, r.name, r.tier, r.credits, r.verified_jobs, r.reputation])
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="nexa-leaderboard.csv"'},
        )
    return Leaderboard(rows=rows)
