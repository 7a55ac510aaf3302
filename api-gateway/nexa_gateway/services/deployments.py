"""Deployments: the tenant's ``dp_…`` artifacts, their serving status, and undeploy.

A deployment is registered like any artifact when its deploy job's result is
accepted, so the artifacts table scopes it to a tenant. Its status lives in the
artifact store (see ``nexa_engines.serve.control``): undeploy writes a stop
request there, which the serving process polls, wherever it runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from nexa.contracts.artifacts import Deployment
from nexa_engines.serve.control import DEPLOYMENT_FILE, deployment_status, request_stop
from nexa_engines.store.base import ArtifactError, ArtifactStore
from nexa_gateway.db import Artifact
from nexa_gateway.errors import ApiError
from nexa_gateway.services.artifacts import get_artifact_row, list_artifact_rows

log = logging.getLogger("nexa.gateway.deployments")


def _record(store: ArtifactStore, deployment_id: str) -> dict[str, Any]:
    try:
        data = json.loads(store.read_file(deployment_id, DEPLOYMENT_FILE))
    except (ArtifactError, ValueError) as exc:
        # The row exists but the record cannot be read: say so instead of inventing fields.
        log.warning("deployment %s: record unreadable: %s", deployment_id, exc)
        return {}
    return data if isinstance(data, dict) else {}


def deployment_contract(store: ArtifactStore, row: Artifact) -> Deployment:
    """The API view of one deployment row, with its live status."""
    record = _record(store, row.id)
    url = record.get("url")
    return Deployment(
        deployment_id=row.id,
        status=deployment_status(store, row.id),
        checkpoint_id=record.get("checkpoint_id"),
        inference_url=url,
        openai_base_url=record.get("openai_base_url") or (f"{url}/v1" if url else None),
        model_name=record.get("model_name"),
        job_id=row.job_id,
        host=record.get("host"),
        created_at=row.created_at,
    )


def list_deployments(
    session: Session, store: ArtifactStore, tenant_id: str, *, limit: int, cursor: str | None
) -> tuple[list[Deployment], str | None]:
    """The tenant's deployments, newest first."""
    rows, nxt = list_artifact_rows(
        session, tenant_id, kind="deployment", job_id=None, limit=limit, cursor=cursor
    )
    return [deployment_contract(store, r) for r in rows], nxt


def get_deployment(session: Session, store: ArtifactStore, tenant_id: str, deployment_id: str) -> Deployment:
    """One deployment of the tenant; 404 for unknown ids and other tenants' deployments alike."""
    return deployment_contract(store, get_artifact_row(session, tenant_id, deployment_id, kind="deployment"))


def undeploy(
    session: Session, store: ArtifactStore, tenant_id: str, deployment_id: str, *, requested_by: str
) -> Deployment:
    """Ask the serving process to stop (idempotent); returns the deployment, now ``stopping`` or ``stopped``."""
    row = get_artifact_row(session, tenant_id, deployment_id, kind="deployment")
    try:
        request_stop(store, deployment_id, requested_by=requested_by)
    except ArtifactError as exc:
        raise ApiError(503, "store_unavailable", f"the stop request could not be recorded: {exc}") from exc
    return deployment_contract(store, row)
