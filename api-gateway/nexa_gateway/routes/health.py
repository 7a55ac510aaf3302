"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from nexa_gateway.deps import StateDep
from nexa_gateway.errors import ApiError
from nexa_gateway.services.artifacts import spool_dir
from nexa_gateway.state import AppState

router = APIRouter(tags=["health"])
log = logging.getLogger("nexa.gateway")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _free_bytes(state: AppState) -> dict[str, int]:
    """Free space where the gateway writes: the local store, the SQLite file, the upload spool."""
    places: dict[str, Path] = {"spool": spool_dir()}
    info = state.store.describe()
    if info.get("kind") == "local" and info.get("root"):
        places["artifact_store"] = Path(str(info["root"]))
    if state.settings.is_sqlite and ":///" in state.settings.database_url:
        places["database"] = Path(state.settings.database_url.split(":///", 1)[1]).parent
    free = {}
    for name, place in places.items():
        while not place.exists() and place != place.parent:
            place = place.parent
        free[name] = shutil.disk_usage(place).free
    return free


def _check(state: AppState) -> dict[str, str]:
    # Unauthenticated: the answer names what failed, never a path, host or connection string.
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readyz: database: %s", exc)
        raise ApiError(503, "not_ready", "not ready: the database does not answer") from exc
    try:
        state.store.ping()
    except Exception as exc:
        log.warning("readyz: artifact store: %s", exc)
        raise ApiError(503, "not_ready", "not ready: the artifact store does not answer") from exc
    low = sorted(n for n, free in _free_bytes(state).items() if free < state.settings.min_free_disk_bytes)
    if low:
        raise ApiError(
            503,
            "not_ready",
            f"not ready: disk full ({', '.join(low)}: under {state.settings.min_free_disk_bytes} bytes free)",
        )
    return {
        "status": "ready",
        "database": state.db.engine.dialect.name,
        "artifact_store": str(state.store.describe().get("kind", "unknown")),
    }


@router.get("/readyz")
async def readyz(state: StateDep) -> dict[str, str]:
    """The database and the artifact store answer, and there is disk to write to."""
    return await run_in_threadpool(_check, state)


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics."""
    body = await run_in_threadpool(generate_latest, state.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
