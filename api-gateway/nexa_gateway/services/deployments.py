"""Deployments: the tenant's ``dp_…`` artifacts, their serving status, and undeploy.

A deployment is registered like any artifact when its deploy job's result is
accepted, so the artifacts table scopes it to a tenant. Its status lives in the
artifact store (see ``nexa_store.serving``): undeploy writes a stop
request there, which the serving process polls, wherever it runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nexa.contracts.artifacts import Deployment
from nexa_gateway.db import Artifact, Job, WorkerStatus
from nexa_gateway.errors import ApiError
from nexa_gateway.services.artifacts import get_artifact_row, list_artifact_rows
from nexa_store.base import ArtifactError, ArtifactStore
from nexa_store.serving import DEPLOYMENT_FILE, deployment_status, request_stop

log = logging.getLogger("nexa.gateway.deployments")


def _record(store: ArtifactStore, deployment_id: str) -> dict[str, Any]:
    try:
        data = json.loads(store.read_file(deployment_id, DEPLOYMENT_FILE))
    except (ArtifactError, ValueError) as exc:
        # The row exists but the record cannot be read: say so instead of inventing fields.
        log.warning("deployment %s: record unreadable: %s", deployment_id, exc)
        return {}
    return data if isinstance(data, dict) else {}


def deployment_contract(store: ArtifactStore, row: Artifact, public_base: str | None = None) -> Deployment:
    """The API view of one deployment row, with its live status."""
    record = _record(store, row.id)
    url = record.get("url")
    public, public_openai = public_urls(public_base, row.id)
    return Deployment(
        deployment_id=row.id,
        status=deployment_status(store, row.id),
        checkpoint_id=record.get("checkpoint_id"),
        inference_url=public or url,
        openai_base_url=public_openai or record.get("openai_base_url") or (f"{url}/v1" if url else None),
        serving_url=url,
        model_name=record.get("model_name"),
        job_id=row.job_id,
        host=record.get("host"),
        created_at=row.created_at,
    )


def serving_root(session: Session, store: ArtifactStore, deployment_id: str) -> str:
    """Where a running deployment's server listens, for the gateway's inference proxy.

    Any tenant's deployment: the serving process checks each caller's key itself.
    Unknown, stopped and unreadable deployments all answer 404 alike.
    """
    row = session.get(Artifact, deployment_id)
    missing = ApiError(404, "not_found", f"deployment {deployment_id} not found or not running")
    if row is None or row.kind != "deployment" or deployment_status(store, deployment_id) != "running":
        raise missing
    if row.job_id is not None and served_by_revoked_node(session, row.job_id):
        # Its node was cut off: no caller's request (or key) goes to it any more.
        raise ApiError(404, "not_found", f"deployment {deployment_id} is not served: its node was revoked")
    url = _record(store, deployment_id).get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise missing
    return url.rstrip("/")


def served_by_revoked_node(session: Session, deploy_job_id: str) -> bool:
    worker_id = session.scalar(select(Job.worker_id).where(Job.id == deploy_job_id))
    status = session.get(WorkerStatus, worker_id) if worker_id is not None else None
    return status is not None and status.state == "revoked"


def public_urls(public_base: str | None, deployment_id: str) -> tuple[str | None, str | None]:
    """(inference_url, openai_base_url) through the gateway, when its public URL is set."""
    if not public_base:
        return None, None
    root = f"{public_base.rstrip('/')}/v1/inference/{deployment_id}"
    return root, f"{root}/v1"


def with_public_urls(result: dict[str, Any], public_base: str | None) -> dict[str, Any]:
    """A deploy job's result as users see it: the public URLs, the serving process's own as ``serving_url``."""
    deployment_id = result.get("deployment_id")
    if not public_base or not isinstance(deployment_id, str) or "inference_url" not in result:
        return result
    public, public_openai = public_urls(public_base, deployment_id)
    return {
        **result,
        "serving_url": result["inference_url"],
        "inference_url": public,
        "openai_base_url": public_openai,
    }


def list_deployments(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    *,
    limit: int,
    cursor: str | None,
    public_base: str | None = None,
) -> tuple[list[Deployment], str | None]:
    """The tenant's deployments, newest first."""
    rows, nxt = list_artifact_rows(
        session, tenant_id, kind="deployment", job_id=None, limit=limit, cursor=cursor
    )
    return [deployment_contract(store, r, public_base) for r in rows], nxt


def get_deployment(
    session: Session, store: ArtifactStore, tenant_id: str, deployment_id: str, public_base: str | None = None
) -> Deployment:
    """One deployment of the tenant; 404 for unknown ids and other tenants' deployments alike."""
    row = get_artifact_row(session, tenant_id, deployment_id, kind="deployment")
    return deployment_contract(store, row, public_base)


def undeploy(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    deployment_id: str,
    *,
    requested_by: str,
    public_base: str | None = None,
) -> Deployment:
    """Ask the serving process to stop (idempotent); returns the deployment, now ``stopping`` or ``stopped``."""
    row = get_artifact_row(session, tenant_id, deployment_id, kind="deployment")
    try:
        request_stop(store, deployment_id, requested_by=requested_by)
    except ArtifactError as exc:
        raise ApiError(503, "store_unavailable", f"the stop request could not be recorded: {exc}") from exc
    return deployment_contract(store, row, public_base)
