"""The deploy engine's serving process, called with the official ``openai`` client and OIP v2 over httpx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from nexa.contracts import DeploySpec  # noqa: E402
from nexa_engines.deploy import run as deploy  # noqa: E402
from nexa_engines.models.loading import ResolvedModel  # noqa: E402
from nexa_engines.models.tiny import TinyConfig, build_tiny_model, corpus_for, learnable_rows  # noqa: E402
from nexa_engines.train.engine import _register_base  # noqa: E402
from nexa_store.serving import deployment_status, request_stop  # noqa: E402
from tests.unit.test_engine_fixtures import make_ctx  # noqa: E402


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("serve")
    base = build_tiny_model(
        root / "base",
        corpus_for(learnable_rows()[:80]),
        TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300),
    )
    ctx = make_ctx(root, job_id="job_ffffffffffffffffffffffffff")
    checkpoint_id = _register_base(ctx, ResolvedModel(str(base), str(base)))
    pytest.MonkeyPatch().setenv("NEXA_HOME", str(root / "home"))
    result = deploy(ctx, DeploySpec(checkpoint_id=checkpoint_id, max_batch_size=8))
    yield ctx, result
    request_stop(ctx.store, result["deployment_id"], requested_by="test teardown")


def test_openai_client_completions_chat_and_streaming(deployment: tuple[Any, dict[str, Any]]) -> None:
    _, dp = deployment
    client = openai.OpenAI(base_url=dp["openai_base_url"], api_key=dp["api_key"], max_retries=0)
    assert [m.id for m in client.models.list().data] == [dp["model_name"]]
    done = client.completions.create(model=dp["model_name"], prompt="What is", max_tokens=4, temperature=0)
    assert done.usage is not None and 1 <= done.usage.completion_tokens <= 4
    assert done.choices[0].finish_reason in ("stop", "length")
    chat = client.chat.completions.create(
        model=dp["model_name"],
        messages=[{"role": "user", "content": "Add 2 and 3."}],
        max_tokens=4,
        temperature=0,
    )
    assert chat.choices[0].message.role == "assistant" and chat.usage is not None
    pieces = list(
        client.chat.completions.create(
            model=dp["model_name"],
            messages=[{"role": "user", "content": "Add 2 and 3."}],
            max_tokens=4,
            temperature=0,
            stream=True,
        )
    )
    streamed = "".join(p.choices[0].delta.content or "" for p in pieces)
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")
    assert streamed.strip() == (chat.choices[0].message.content or "").strip()  # greedy: same text either way
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=dp["model_name"], prompt="x", max_tokens=0)


def test_the_endpoint_refuses_callers_without_its_key(deployment: tuple[Any, dict[str, Any]]) -> None:
    _, dp = deployment
    for key in ("", "nexa_ep_wrong", "nexa_not-a-key"):
        client = openai.OpenAI(base_url=dp["openai_base_url"], api_key=key or "x", max_retries=0)
        if not key:
            client = openai.OpenAI(
                base_url=dp["openai_base_url"],
                api_key="x",
                max_retries=0,
                default_headers={"Authorization": ""},
            )
        with pytest.raises(openai.AuthenticationError) as info:
            client.models.list()
        assert info.value.status_code == 401 and "API key" in str(info.value)
    oip = httpx.post(f"{dp['inference_url']}/v2/models/{dp['model_name']}/infer", json={"inputs": []})
    assert oip.status_code == 401 and oip.json()["error"]["code"] == "invalid_api_key"
    # Probes stay open for the kubelet; the key never appears in the deployment record.
    assert httpx.get(f"{dp['inference_url']}/v2/health/ready").status_code == 200
    ctx, _ = deployment
    record = ctx.store.read_file(dp["deployment_id"], "deployment.json").decode()
    assert dp["api_key"] not in record and "endpoint_key_sha256" in record


def test_oip_v2_and_undeploy(deployment: tuple[Any, dict[str, Any]]) -> None:
    ctx, dp = deployment
    url, name = dp["inference_url"], dp["model_name"]
    auth = {"Authorization": f"Bearer {dp['api_key']}"}
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/{name}", headers=auth).json()["inputs"][0]["name"] == "text_input"
    body = {
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}],
        "parameters": {"max_tokens": 3},
    }
    out = httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=60, headers=auth).json()
    assert out["outputs"][0]["shape"] == [2] and len(out["outputs"][0]["data"]) == 2
    assert httpx.post(f"{url}/v2/models/nope/infer", json=body, headers=auth).status_code == 404
    assert request_stop(ctx.store, dp["deployment_id"], requested_by="test")
    deadline = time.monotonic() + 20
    while deployment_status(ctx.store, dp["deployment_id"]) != "stopped" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert deployment_status(ctx.store, dp["deployment_id"]) == "stopped"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v2/health/live", timeout=2)
    assert _exits(dp["pid"], within=15.0)


def _exits(pid: int, within: float) -> bool:
    """True once ``pid`` is gone (or a zombie waiting for its parent) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "zombie" in Path(f"/proc/{pid}/status").read_text().lower():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False
