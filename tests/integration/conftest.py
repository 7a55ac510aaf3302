"""Fixtures for the integration tier (registered from gateway_app)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.k8s import K8sCluster
from tests.integration.gateway_app import gateway, sqlite_gateway

__all__ = ["gateway", "sqlite_gateway"]


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the gateway these tests run in-process is an asyncio app (uvicorn runs it so),
    and anyio would also try trio once trio is installed (selenium brings it)."""
    return "asyncio"


@pytest.fixture(scope="module")
def nexa_crds(k8s_cluster: K8sCluster) -> K8sCluster:
    """The session's cluster with the NexaJob and NexaEndpoint CRDs applied and served."""
    from tests.integration.operator_helpers import install_crds

    install_crds(k8s_cluster)
    return k8s_cluster


@pytest.fixture(scope="module")
def kube_api(nexa_crds: K8sCluster) -> Iterator[Any]:
    """A ``kubernetes`` ApiClient for the cluster of ``nexa_crds``."""
    with nexa_crds.api_client() as api_client:
        yield api_client
