"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from nexa_gateway.deps import StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.state import AppState

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _check(state: AppState) -> dict[str, str]:
    with state.db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    state.store.ping()
    return {
        "status": "ready",
        "database": state.db.engine.dialect.name,
        "artifact_store": state.store.root_uri,
    }


@router.get("/readyz")
async def readyz(state: StateDep) -> dict[str, str]:
    """The database and the artifact store answer."""
    try:
        return await run_in_threadpool(_check, state)
    except Exception as exc:  # any failure of a dependency means 'not ready', with the reason
        raise ApiError(503, "not_ready", f"not ready: {type(exc).__name__}: {exc}") from exc


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics."""
    body = await run_in_threadpool(generate_latest, state.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
