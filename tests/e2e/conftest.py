"""End-to-end tests need a real Kubernetes cluster; these fixtures say which one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

KUBECONFIG_ENV = "NEXA_TEST_KUBECONFIG"


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    """Path of the kubeconfig naming the test cluster: $NEXA_TEST_KUBECONFIG, else $KUBECONFIG."""
    named = os.environ.get(KUBECONFIG_ENV) or os.environ.get("KUBECONFIG")
    if not named:
        pytest.fail(f"end-to-end tests need a cluster: set {KUBECONFIG_ENV} to its kubeconfig", pytrace=False)
    path = Path(named).expanduser()
    if not path.is_file():
        pytest.fail(f"{KUBECONFIG_ENV} names {path}, which is not a file", pytrace=False)
    return path


@pytest.fixture
def use_kubeconfig(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point KUBECONFIG at the test cluster for this test, so clients and kubectl cannot reach another."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return kubeconfig
