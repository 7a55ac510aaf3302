"""Shared test setup: the server fixtures, markers by directory, and the e2e opt-in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.gateway_proc",
    "tests.fixtures.s3_server",
    "tests.fixtures.k8s",
    "tests.fixtures.stripe_mock",
]

TESTS_DIR = Path(__file__).resolve().parent
INTEGRATION_DIR = TESTS_DIR / "integration"
E2E_DIR = TESTS_DIR / "e2e"
KUBECONFIG_ENV = "NEXA_TEST_KUBECONFIG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e",
        action="store_true",
        default=False,
        help=f"run tests/e2e against a real Kubernetes cluster (also enabled by {KUBECONFIG_ENV})",
    )


def e2e_enabled(config: pytest.Config) -> bool:
    """Whether end-to-end tests were asked for, by flag or by naming a cluster."""
    return bool(config.getoption("--with-e2e") or os.environ.get(KUBECONFIG_ENV))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_e2e = pytest.mark.skip(reason=f"end-to-end test: pass --with-e2e or set {KUBECONFIG_ENV}")
    run_e2e = e2e_enabled(config)
    for item in items:
        path = Path(item.path).resolve()
        if path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
        if path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
            if not run_e2e:
                item.add_marker(skip_e2e)
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLAlchemy URL of an empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nexa.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
