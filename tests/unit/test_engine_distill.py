"""The distill engine against a real OpenAI-compatible HTTP teacher named through the model catalog."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nexa.contracts import DistillSpec
from nexa.contracts.catalog import parse_catalog
from nexa_engines.distill import run
from nexa_engines.engine import EngineError
from tests.unit.test_audit_engine import make_ctx


class _Teacher(BaseHTTPRequestHandler):
    """Answers every chat with ``answer``, or with nothing when ``blank_all``."""

    answer = "Paris"
    blank_all = False
    seen_models: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen_models.append(body["model"])
        content = "" if self.blank_all else self.answer
        payload = json.dumps(
            {
                "choices": [{"message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def teacher_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("NEXA_OUTBOUND_ALLOWLIST", "127.0.0.1")  # this operator allows a loopback teacher
    _Teacher.blank_all = False
    _Teacher.seen_models = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _prompts(tmp_path: Path) -> str:
    path = tmp_path / "data" / "prompts.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"prompt": [f"What is the capital of country {i}?" for i in range(6)]}), path)
    return str(path)


def test_a_catalog_teacher_distills_into_sft_parquet(tmp_path: Path, teacher_url: str) -> None:
    ctx = make_ctx(tmp_path)
    ctx.catalog = parse_catalog(
        json.dumps({"house-teacher": {"base_url": teacher_url, "model": "served-7b"}})
    )
    spec = DistillSpec(
        dataset_id=_prompts(tmp_path), teacher="house-teacher", student_model="Mistral-7B", concurrency=2
    )
    result = run(ctx, spec)
    assert set(_Teacher.seen_models) == {"served-7b"}  # the catalog's model name, not the catalog key
    assert result["sft_dataset_uri"] == f"internal://{result['distilled_dataset_id']}/sft.parquet"
    assert result["num_samples"] == 6 and result["empty_responses"] == 0
    assert result["student_model"] == "Mistral-7B"
    manifest = ctx.store.read_manifest(result["distilled_dataset_id"])
    assert manifest.config["student_model"] == "Mistral-7B" and manifest.config["teacher"] == "house-teacher"
    table = pq.read_table(ctx.store.artifact_dir(result["distilled_dataset_id"]) / "sft.parquet")
    assert table.column("response").to_pylist() == ["Paris"] * 6


def test_a_teacher_that_answers_nothing_fails_the_job(tmp_path: Path, teacher_url: str) -> None:
    _Teacher.blank_all = True
    ctx = make_ctx(tmp_path)
    ctx.catalog = parse_catalog(json.dumps({"house-teacher": {"base_url": teacher_url}}))
    with pytest.raises(EngineError) as failed:
        run(ctx, DistillSpec(dataset_id=_prompts(tmp_path), teacher="house-teacher"))
    assert failed.value.code == "teacher_empty_answers" and not failed.value.retryable
    assert "6 of 6" in failed.value.message
    assert ctx.produced_artifacts == []  # nothing committed


def test_an_unknown_catalog_name_is_teacher_not_found(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    with pytest.raises(EngineError) as failed:
        run(ctx, DistillSpec(dataset_id=_prompts(tmp_path), teacher="no-such-teacher"))
    assert failed.value.code == "teacher_not_found" and "NEXA_MODEL_CATALOG" in failed.value.message
