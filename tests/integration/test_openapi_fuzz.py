"""Schemathesis over the gateway's own OpenAPI schema (RELIABILITY R10, R17): no 5xx, answers match."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nexa_gateway.main import _bootstrap, create_app
from nexa_gateway.services.keys import generate_api_key
from nexa_gateway.settings import Settings

_ROOT = Path(tempfile.mkdtemp(prefix="nexa-fuzz-"))
_KEY = generate_api_key()
_SECRET = "fuzz-worker-secret"
_APP = create_app(
    Settings(
        database_url=f"sqlite:///{_ROOT / 'nexa.db'}",
        artifact_root=_ROOT / "artifacts",
        allowed_dataset_roots=[_ROOT],
        bootstrap_grant_local_roots=True,
        platform_signing_key=secrets.token_hex(32),
        worker_secret=_SECRET,
        bootstrap_api_key=_KEY,
        rate_limit_per_minute=1_000_000,
    )
)
_bootstrap(_APP.state.nexa)

schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


def _worker_token() -> str:
    from nexa.contracts import WorkerRegister
    from nexa_gateway.services.queue import register_worker

    with _APP.state.nexa.db.session() as session:
        _worker, token = register_worker(session, WorkerRegister(name="fuzz"))
    return token


_WORKER = _worker_token()


def _auth_for(path: str) -> str:
    if path == "/v1/workers/register":
        return _SECRET
    if path.startswith("/v1/workers/"):
        return _WORKER
    return _KEY


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_answers_match_the_schema(case: schemathesis.Case) -> None:
    if case.path == "/v1/jobs/{job_id}/logs":
        # A following stream only ends with its job; ask for what is stored so far.
        case.query = {**(case.query or {}), "follow": "false"}
    if case.path == "/v1/workers/claim" and isinstance(case.body, dict):
        # Long-polling is correct behaviour, but the fuzzer's client gives up after 10 s.
        case.body["wait_seconds"] = 0
    headers = {"Authorization": f"Bearer {_auth_for(case.path)}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
