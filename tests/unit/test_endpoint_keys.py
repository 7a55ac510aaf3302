"""Endpoint keys derive from the deploy job under the gateway's secret: nothing to store, nothing to leak."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexa.contracts import Job, JobState, JobType
from nexa_gateway.services.endpointkeys import (
    endpoint_key,
    endpoint_key_sha256,
    load_or_create_secret,
    reveal,
)
from nexa_gateway.settings import Settings

JOB = "job_aaaaaaaaaaaaaaaaaaaaaaaaaa"


def _job(job_type: JobType, result: dict[str, object] | None) -> Job:
    now = datetime.now(UTC)
    return Job(
        job_id=JOB,
        job_type=job_type,
        user_id="tnt_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        status=JobState.completed,
        created_at=now,
        updated_at=now,
        result=result,
    )


def test_a_key_is_the_same_for_a_job_and_differs_across_jobs_and_secrets() -> None:
    key = endpoint_key(b"one", JOB)
    assert key.startswith("nexa_ep_") and len(key) > 40
    assert endpoint_key(b"one", JOB) == key
    assert endpoint_key(b"one", "job_bbbbbbbbbbbbbbbbbbbbbbbbbb") != key
    assert endpoint_key(b"two", JOB) != key
    assert endpoint_key_sha256(b"one", JOB) == hashlib.sha256(key.encode()).hexdigest()


def test_the_tenant_sees_the_key_of_its_deployment_only() -> None:
    deployed = reveal(b"s", _job(JobType.deploy, {"deployment_id": "dp_aaaaaaaaaaaaaaaaaaaaaaaaaa"}))
    assert deployed.result is not None and deployed.result["api_key"] == endpoint_key(b"s", JOB)
    # A deployment from before derived keys keeps the key its worker made; other jobs gain nothing.
    old = reveal(b"s", _job(JobType.deploy, {"deployment_id": "dp_x", "api_key": "nexa_ep_old"}))
    assert old.result is not None and old.result["api_key"] == "nexa_ep_old"
    assert reveal(b"s", _job(JobType.train, {"checkpoint_id": "ckpt_x"})).result == {
        "checkpoint_id": "ckpt_x"
    }
    assert reveal(b"s", _job(JobType.deploy, None)).result is None
    assert reveal(None, _job(JobType.deploy, {"deployment_id": "dp_x"})).result == {"deployment_id": "dp_x"}


def test_the_secret_is_made_once_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXA_HOME", str(tmp_path))
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db'}")
    first = load_or_create_secret(settings)
    assert load_or_create_secret(settings) == first and len(first) == 64
    assert (tmp_path / "endpoint-keys.secret").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(Settings(database_url="sqlite://", endpoint_key_secret="given")) == b"given"
