"""Pure pieces of the ML engines: packing isolation, OIP v2 mapping, batching, teacher retries, journal resume."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nexa_engines.models.generation import GenerationRequest, GenerationResult  # noqa: E402
from nexa_engines.serve import oip  # noqa: E402
from nexa_engines.serve.batcher import BatchScheduler  # noqa: E402
from nexa_engines.teacher.client import ChatClient, TeacherError, backoff_seconds  # noqa: E402
from nexa_engines.teacher.journal import SampleJournal  # noqa: E402
from nexa_engines.train.data import Example, pack_rows, packed_batches  # noqa: E402
from tests.unit.test_engine_fixtures import make_ctx  # noqa: E402


def _tiny_model() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config).eval()


def test_packed_rows_compute_what_each_example_computes_alone() -> None:
    model = _tiny_model()
    examples = [
        Example(list(range(1 + i, 8 + 2 * i)), [-100] * 3 + list(range(4 + i, 8 + 2 * i))) for i in range(5)
    ]
    rows = pack_rows(examples, capacity=32, pad_id=0)
    batch = next(packed_batches(rows, list(range(len(rows))), len(rows)))
    assert batch.real_tokens == sum(len(e.input_ids) for e in examples)
    with torch.no_grad():
        packed = model(
            input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=batch.attention_mask
        ).logits
        for row_index, row in enumerate(rows):
            for seg in sorted(set(row["segments"].tolist()) - {-1}):
                where = (row["segments"] == seg).nonzero()[0]
                alone = model(input_ids=torch.tensor([examples[seg].input_ids])).logits[0]
                assert row["position_ids"][where].tolist() == list(range(len(where)))
                assert torch.allclose(packed[row_index, where], alone, atol=1e-5)


def test_oip_request_and_response_mapping() -> None:
    body = {
        "id": "r1",
        "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}],
        "parameters": {"max_tokens": 5, "temperature": 0.5, "stop": "\n"},
    }
    call = oip.parse_infer_request(body)
    assert call.request_id == "r1"
    assert [(r.prompt, r.max_tokens, r.temperature, list(r.stop)) for r in call.requests] == [
        ("a", 5, 0.5, ["\n"]),
        ("b", 5, 0.5, ["\n"]),
    ]
    raw, header_length = oip.infer_response(
        "m", call, [GenerationResult("x", 1, 2, "stop"), GenerationResult("y", 1, 3, "length")]
    )
    out = json.loads(raw)
    assert header_length is None
    assert out["outputs"][0] == {"name": "text_output", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}
    assert out["outputs"][1]["data"] == [2, 3] and out["id"] == "r1"
    for bad in ({}, {"inputs": []}, {"inputs": [{"name": "text_input", "datatype": "FP32", "data": [1.0]}]},
                {"inputs": [{"name": "text_input", "shape": [3], "data": ["a"]}]}):  # fmt: skip
        with pytest.raises(oip.InferenceRequestError):
            oip.parse_infer_request(bad)


def test_oip_binary_tensor_data_both_ways_with_the_inputs_shape() -> None:
    import struct

    prompts = ["What is", "héllo"]
    tensor = b"".join(struct.pack("<I", len(p.encode())) + p.encode() for p in prompts)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text_input",
                    "datatype": "BYTES",
                    "shape": [2, 1],
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [
                {"name": "text_output", "parameters": {"binary_data": True}},
                {"name": "completion_tokens"},
            ],
        }
    ).encode()
    body, binary = oip.split_body(header + tensor, str(len(header)))
    call = oip.parse_infer_request(body, binary=binary)
    assert [r.prompt for r in call.requests] == prompts and call.shape == [2, 1]
    raw, size = oip.infer_response(
        "m", call, [GenerationResult("x", 1, 2, "stop"), GenerationResult("ÿ", 1, 3, "stop")]
    )
    assert size is not None
    head, tail = json.loads(raw[:size]), raw[size:]
    text, tokens = head["outputs"]
    assert (
        text["shape"] == [2, 1] and "data" not in text and text["parameters"]["binary_data_size"] == len(tail)
    )
    assert tail == struct.pack("<I", 1) + b"x" + struct.pack("<I", 2) + "ÿ".encode()
    assert tokens == {"name": "completion_tokens", "datatype": "INT64", "shape": [2, 1], "data": [2, 3]}
    # Every output in binary when the request says so and names none.
    everything = oip.parse_infer_request(
        {**body, "outputs": None, "parameters": {"binary_data_output": True}}, binary=binary
    )
    assert everything.binary == {"text_output", "completion_tokens"}
    for bad_header, bad_binary in (
        (str(len(header) + 10**6), header + tensor),
        ("x", header + tensor),
        (str(len(header)), header + tensor[:-2]),  # a cut element
        (str(len(header)), header + tensor + b"extra"),  # bytes no input claims
    ):
        with pytest.raises(oip.InferenceRequestError):
            body_, binary_ = oip.split_body(bad_binary, bad_header)
            oip.parse_infer_request(body_, binary=binary_)
    with pytest.raises(oip.InferenceRequestError, match="unknown output"):
        oip.parse_infer_request({**body, "outputs": [{"name": "logits"}]}, binary=binary)


def test_batcher_groups_concurrent_requests_and_streams_pieces() -> None:
    seen: list[int] = []
    gate = threading.Event()

    def generate(requests: Any, on_token: Any) -> list[GenerationResult]:
        gate.wait(5)
        seen.append(len(requests))
        for i, r in enumerate(requests):
            on_token(i, r.prompt.upper())
        return [GenerationResult(r.prompt.upper(), 1, 1, "stop") for r in requests]

    scheduler = BatchScheduler(generate, max_batch_size=4, max_wait_s=0.2).start()
    try:
        tickets = [scheduler.submit(GenerationRequest(prompt=f"p{i}")) for i in range(6)]
        gate.set()
        results = [t.result(timeout=10) for t in tickets]
    finally:
        scheduler.stop()
    assert [r.text for r in results] == [f"P{i}" for i in range(6)]
    assert sum(seen) == 6 and max(seen) == 4  # batched, capped at max_batch_size
    assert tickets[0].events.empty()  # the token piece came before "done" and was consumed by result()


class _Flaky(BaseHTTPRequestHandler):
    plan: list[int] = []
    calls = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        status = self.plan.pop(0) if self.plan else 200
        body = {
            "choices": [{"message": {"content": "ok"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body if status == 200 else {"error": "x"}).encode())

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def flaky_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    # The teacher client connects only where the outbound policy allows: loopback, as `nexa up` does.
    monkeypatch.setenv("NEXA_OUTBOUND_ALLOWLIST", "127.0.0.0/8")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_teacher_retries_429_and_5xx_then_succeeds(flaky_server: str) -> None:
    _Flaky.plan, _Flaky.calls = [429, 503, 500], 0
    waits: list[float] = []
    client = ChatClient(flaky_server, "m", sleep=waits.append, max_retries=5)
    answer = client.chat([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0)
    assert (answer.text, answer.prompt_tokens, answer.completion_tokens) == ("ok", 3, 1)
    assert _Flaky.calls == 4 and client.retries == 3 and waits[0] == 0.0  # Retry-After honoured


def test_teacher_gives_up_and_does_not_retry_client_errors(flaky_server: str) -> None:
    _Flaky.plan, _Flaky.calls = [503] * 10, 0
    client = ChatClient(flaky_server, "m", sleep=lambda s: None, max_retries=2)
    with pytest.raises(TeacherError) as err:
        client.chat([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0)
    assert err.value.retryable and _Flaky.calls == 3
    _Flaky.plan, _Flaky.calls = [400], 0
    with pytest.raises(TeacherError) as err:
        client.chat([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0)
    assert not err.value.retryable and _Flaky.calls == 1
    assert 0 < backoff_seconds(3, None) <= 2.0


def test_journal_resume_has_no_duplicates_or_gaps(tmp_path: Path) -> None:
    first = make_ctx(tmp_path, attempt=1)
    journal = SampleJournal(first, flush_every=4)
    for i in range(10):
        journal.add({"index": i, "response": f"r{i}"})
    # Killed here: samples 8 and 9 were answered but never flushed.
    second = make_ctx(tmp_path, attempt=2)
    resumed = SampleJournal(second, flush_every=4)
    assert resumed.load() == 8
    for i in range(12):
        if i not in resumed.done:
            resumed.add({"index": i, "response": f"again{i}"})
    resumed.flush()
    third = SampleJournal(make_ctx(tmp_path, attempt=3))
    assert third.load() == 12
    assert sorted(third.done) == list(range(12))
    assert third.done[3]["response"] == "r3" and third.done[9]["response"] == "again9"
