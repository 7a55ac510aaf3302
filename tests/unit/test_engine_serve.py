"""Continuous batching in the serving process: rows join and leave a running batch; metrics are exported."""

from __future__ import annotations

import threading
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastapi.testclient import TestClient  # noqa: E402

from nexa_engines.models.generation import DecodeBatch, GenerationRequest, generate_batch  # noqa: E402
from nexa_engines.models.loading import ResolvedModel, load_model, load_tokenizer  # noqa: E402
from nexa_engines.models.prompt import format_prompt  # noqa: E402
from nexa_engines.models.tiny import TinyConfig, build_tiny_model, corpus_for, learnable_rows  # noqa: E402
from nexa_engines.serve.app import create_app  # noqa: E402
from nexa_engines.serve.batcher import BatchScheduler  # noqa: E402
from nexa_engines.serve.metrics import ServingMetrics  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    rows = learnable_rows()[:80]
    directory = build_tiny_model(
        tmp_path_factory.mktemp("serve-model") / "m",
        corpus_for(rows),
        TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300),
    )
    resolved = ResolvedModel(str(directory), str(directory))
    return load_model(resolved, dtype=torch.float32).eval(), load_tokenizer(resolved)


def _requests(n: int) -> list[GenerationRequest]:
    rows = learnable_rows(1)[:n]
    # Different prompt lengths and budgets, so rows finish at different steps.
    return [
        GenerationRequest(prompt=format_prompt(r["instruction"]), max_tokens=3 + i % 6, temperature=0)
        for i, r in enumerate(rows)
    ]


def test_greedy_output_is_the_same_alone_and_inside_a_busy_batch(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    requests = _requests(9)
    alone = [generate_batch(net, tokenizer, [r])[0] for r in requests]
    pieces: dict[int, str] = {}
    batch = DecodeBatch(
        net, tokenizer, on_token=lambda key, text: pieces.__setitem__(key, pieces.get(key, "") + text)
    )
    batch.add(requests[:3], [0, 1, 2])
    results: dict[int, Any] = {}
    sizes = []
    waiting = list(range(3, 9))
    while batch or waiting:
        joining, waiting = waiting[:2], waiting[2:]  # two join before every step while others run
        batch.add([requests[k] for k in joining], joining)
        sizes.append(len(batch))
        results.update(batch.step())
    assert max(sizes) > 3  # late requests really shared steps with running ones
    for key, single in enumerate(alone):
        assert results[key].token_ids == single.token_ids, key
        assert results[key].text == single.text == pieces.get(key, "")
        assert results[key].finish_reason == single.finish_reason


def test_scheduler_admits_new_requests_into_the_running_batch(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    first_step = threading.Event()
    release = threading.Event()
    sizes: list[int] = []

    def on_step(size: int) -> None:
        sizes.append(size)
        first_step.set()
        release.wait(5)  # hold the first step so the late request arrives while the batch runs

    long = GenerationRequest(prompt=format_prompt("What is 2 plus 3?"), max_tokens=12, temperature=0)
    late = GenerationRequest(
        prompt=format_prompt("Name the capital city of France."), max_tokens=2, temperature=0
    )
    scheduler = BatchScheduler(
        decoder=lambda sink: DecodeBatch(net, tokenizer, on_token=sink),
        max_batch_size=4,
        max_wait_s=0.0,
        on_step=on_step,
    ).start()
    try:
        long_ticket = scheduler.submit(long)
        assert first_step.wait(10)
        late_ticket = scheduler.submit(late)
        release.set()
        late_result = late_ticket.result(timeout=30)
        long_result = long_ticket.result(timeout=30)
    finally:
        release.set()
        scheduler.stop()
    assert 2 in sizes  # the late request joined the running one instead of waiting for it to end
    assert sizes[-1] == 1  # and left as soon as it was done, while the long one kept going
    assert late_result.token_ids == generate_batch(net, tokenizer, [late])[0].token_ids
    assert long_result.token_ids == generate_batch(net, tokenizer, [long])[0].token_ids


def test_metrics_endpoint_counts_requests_tokens_and_batch_sizes(model: tuple[Any, Any]) -> None:
    net, tokenizer = model
    metrics = ServingMetrics("tiny")
    scheduler = BatchScheduler(
        decoder=lambda sink: DecodeBatch(net, tokenizer, on_token=sink),
        on_step=metrics.observe_step,
        on_done=metrics.observe_done,
    ).start()
    try:
        client = TestClient(create_app(scheduler, "tiny", metrics=metrics))
        ok = client.post("/v1/completions", json={"prompt": "What is", "max_tokens": 3, "temperature": 0})
        assert ok.status_code == 200
        assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 0}).status_code == 400
        text = client.get("/metrics").text
    finally:
        scheduler.stop()
    tokens = ok.json()["usage"]["completion_tokens"]
    assert 'nexa_endpoint_requests_total{model="tiny",route="/v1/completions",status="200"} 1.0' in text
    assert 'nexa_endpoint_requests_total{model="tiny",route="/v1/completions",status="400"} 1.0' in text
    assert f'nexa_endpoint_generated_tokens_total{{model="tiny"}} {float(tokens)}' in text
    assert 'nexa_endpoint_request_duration_seconds_count{model="tiny",route="/v1/completions"} 2.0' in text
    steps = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("nexa_endpoint_batch_size_count")
    )
    assert steps >= 1


def test_the_server_refuses_to_start_without_a_way_to_check_callers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nexa_engines.serve import server

    for name in ("NEXA_SERVE_KEY", "NEXA_SERVE_KEY_SHA256", "NEXA_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    assert server.main(["--model-dir", "/nonexistent", "--port", "1"]) == 2
    assert "no way to check callers" in capsys.readouterr().err
