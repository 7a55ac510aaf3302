"""The deployment calls (list, status, undeploy), shared by the sync and async clients."""

from __future__ import annotations

from nexa._core import Call, Paginator, _model_parser, _segment
from nexa.contracts.artifacts import Deployment, DeploymentList


def list_page(limit: int, cursor: str | None) -> Call[DeploymentList]:
    """One page of ``GET /v1/deployments``."""
    params = [("limit", str(limit))]
    if cursor:
        params.append(("cursor", cursor))
    return Call("GET", "/v1/deployments", _model_parser(DeploymentList), params=params, retryable=True)


def pager(*, limit: int | None, page_size: int) -> Paginator[Deployment]:
    """Every deployment, newest first, page by page."""
    return Paginator(list_page, limit=limit, page_size=page_size)


def get(deployment_id: str) -> Call[Deployment]:
    """``GET /v1/deployments/{id}``."""
    return Call(
        "GET", f"/v1/deployments/{_segment(deployment_id)}", _model_parser(Deployment), retryable=True
    )


def undeploy(deployment_id: str) -> Call[Deployment]:
    """``DELETE /v1/deployments/{id}``; safe to retry (a repeated stop request is a no-op)."""
    return Call(
        "DELETE", f"/v1/deployments/{_segment(deployment_id)}", _model_parser(Deployment), retryable=True
    )
