"""Teachers: a deployment's own record and a user's base URL are both held to the outbound policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexa.ids import new_id
from nexa_engines.engine import EngineError
from nexa_engines.teacher.resolve import resolve_teacher
from nexa_store.serving import DEPLOYMENT_FILE
from tests.unit.test_engine_fixtures import make_ctx


def test_a_deployment_record_pointing_inside_the_network_is_refused(tmp_path: Path) -> None:
    """A node that ran the deploy job wrote the record: its URL is no more trusted than a user's."""
    ctx = make_ctx(tmp_path)
    dp = new_id("dp")
    with ctx.store.begin("deployment", dp) as writer:
        record = {"openai_base_url": "http://169.254.169.254/latest/v1", "model_name": dp}
        (writer.path / DEPLOYMENT_FILE).write_text(json.dumps(record))
        writer.commit(tenant_id=ctx.tenant_id, job_id=new_id("job"), attempt=1)
    with pytest.raises(EngineError) as info:
        resolve_teacher(ctx, dp, None, None)
    assert info.value.code == "url_not_allowed"


def test_a_platform_key_never_goes_to_a_base_url_the_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-platform")
    ctx = make_ctx(tmp_path)
    with pytest.raises(EngineError) as info:
        resolve_teacher(ctx, "openai/gpt-4o-mini", "https://93.184.215.14/v1", "OPENAI_API_KEY")
    assert info.value.code == "key_env_not_allowed"
    with pytest.raises(EngineError) as info:
        resolve_teacher(ctx, "openai/gpt-4o-mini", "https://93.184.215.14/v1", "NEXA_WORKER_SECRET")
    assert info.value.code == "key_env_not_allowed"
    # No key named and a user URL: the call goes out without any of the platform's keys.
    teacher = resolve_teacher(ctx, "openai/gpt-4o-mini", "https://93.184.215.14/v1", None)
    assert "authorization" not in {k.lower() for k in teacher.client._http.headers}  # type: ignore[union-attr]
    teacher.close()
    # The provider's own endpoint gets the provider's key.
    official = resolve_teacher(ctx, "openai/gpt-4o-mini", None, None)
    assert official.client._http.headers["authorization"] == "Bearer sk-platform"  # type: ignore[union-attr]
    official.close()
