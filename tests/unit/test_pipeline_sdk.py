"""Pipeline files and the SDK's pipeline and lineage calls, over httpx.MockTransport."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import nexa.async_client
import nexa.client
from nexa import (
    AsyncNexaClient,
    ConflictError,
    InternalServerError,
    Lineage,
    NexaClient,
    PipelineFileError,
    PipelineState,
    PipelineWaitTimeoutError,
    StepState,
    WaitTimeoutError,
    load_pipeline,
)
from nexa.contracts.pipelines import PipelineEventKind, PipelineSpec
from nexa.pipelinefile import pipeline_request

BASE = "http://nexa.test"
PL_ID = "pl_" + "a" * 26
DS_ID = "ds_" + "b" * 26
CKPT_ID = "ckpt_" + "c" * 26
NOW = "2025-01-02T03:04:05Z"

YAML_FILE = """\
name: nightly
description: audit, train, evaluate, deploy
parameters:
  data: ds_bbbbbbbbbbbbbbbbbbbbbbbbbb
  epochs: 3
labels: {team: ml}
steps:
  - name: audit
    type: audit
    spec: {dataset_uri: "{params.data}"}
    gate: {min_quality_tier: B}
  - name: train
    type: train
    spec:
      dataset_id: "{steps.audit.outputs.dataset_id}"
      model: Qwen/Qwen2.5-0.5B
      epochs: "{params.epochs}"
  - name: deploy
    type: deploy
    approval: true
    spec: {checkpoint_id: "{steps.train.outputs.checkpoint_id}"}
"""

SPEC: dict[str, Any] = {
    "name": "nightly",
    "parameters": {"data": DS_ID},
    "steps": [
        {"name": "audit", "type": "audit", "spec": {"dataset_uri": "{params.data}"}},
        {
            "name": "train",
            "type": "train",
            "spec": {"dataset_id": "{steps.audit.outputs.dataset_id}", "model": "Qwen/Qwen2.5-0.5B"},
        },
    ],
}

Handler = Callable[[httpx.Request], httpx.Response]


def pipeline_json(
    status: str = "running", steps: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    states = steps or {"audit": "completed", "train": "running"}
    types = {"audit": "audit", "train": "train"}
    return {
        "pipeline_id": PL_ID,
        "name": "nightly",
        "status": status,
        "created_at": NOW,
        "updated_at": NOW,
        "steps": [{"name": n, "type": types[n], "status": s} for n, s in states.items()],
        "spec": SPEC,
        **extra,
    }


class Script:
    """A MockTransport handler answering from a list, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_client(handler: Handler, **kwargs: Any) -> NexaClient:
    return NexaClient("nexa_testkey", BASE, transport=httpx.MockTransport(handler), **kwargs)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(nexa.client, "_sleep", recorded.append)

    async def fake_async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(nexa.async_client, "_sleep", fake_async_sleep)
    return recorded


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- pipeline files


def test_a_yaml_file_loads_with_bare_numbers_as_parameter_text(tmp_path: Path) -> None:
    spec = load_pipeline(write(tmp_path, "p.yaml", YAML_FILE))
    assert spec.name == "nightly" and [s.name for s in spec.steps] == ["audit", "train", "deploy"]
    assert spec.parameters == {"data": DS_ID, "epochs": "3"}
    assert spec.step("deploy").approval and spec.labels == {"team": "ml"}


def test_parameters_override_the_files_own(tmp_path: Path) -> None:
    spec = load_pipeline(write(tmp_path, "p.yml", YAML_FILE), {"epochs": "5"})
    assert spec.parameters == {"data": DS_ID, "epochs": "5"}


def test_a_json_file_loads_and_an_unknown_suffix_is_json_or_yaml(tmp_path: Path) -> None:
    assert load_pipeline(write(tmp_path, "p.json", json.dumps(SPEC))).parameters == {"data": DS_ID}
    assert load_pipeline(write(tmp_path, "pipeline", json.dumps(SPEC))).name == "nightly"
    assert load_pipeline(write(tmp_path, "pipeline.txt", YAML_FILE)).name == "nightly"


@pytest.mark.parametrize(
    ("name", "text", "parameters", "needle"),
    [
        ("p.yaml", "name: x\nsteps:\n  - name: a\n   type: audit\n", None, "line 4, column 4"),
        ("p.json", '{"name": "x",', None, "line 1, column 14"),
        (
            "p.yaml",
            "- name: x\n",
            None,
            "expected a mapping with `name` and `steps` at the top, found a list",
        ),
        ("p.yaml", "", None, "found nothing"),
        (
            "p.yaml",
            YAML_FILE.replace("type: train", "type: trian"),
            None,
            "steps[1] (train).type: Input should be",
        ),
        (
            "p.yaml",
            YAML_FILE.replace("{params.data}", "{params.date}"),
            None,
            "{params.date} names no parameter",
        ),
        ("p.yaml", YAML_FILE.replace("epochs: 3", "epochs: zero"), None, "step 'train': spec.epochs"),
        (
            "p.yaml",
            YAML_FILE.replace("  - name: deploy", "    retries: 1\n  - name: deploy").replace(
                "    retries: 1", "    retires: 1"
            ),
            None,
            "steps[1] (train).retires: Extra inputs are not permitted",
        ),
        ("p.yaml", YAML_FILE, {"epoch": "5"}, "parameter 'epoch' is not declared under `parameters`"),
    ],
)
def test_a_bad_file_is_one_clean_error_naming_the_file_and_the_field(
    tmp_path: Path, name: str, text: str, parameters: dict[str, str] | None, needle: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(path, parameters)
    assert info.value.source == str(path)
    assert str(path) in info.value.message
    assert any(needle in problem for problem in info.value.problems), info.value.problems
    assert isinstance(info.value, ValueError)


def test_a_missing_file_or_a_directory_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineFileError, match="no such file"):
        load_pipeline(tmp_path / "nope.yaml")
    with pytest.raises(PipelineFileError, match="is a directory"):
        load_pipeline(tmp_path)


def test_without_pyyaml_yaml_is_refused_with_the_way_out_and_json_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    with pytest.raises(PipelineFileError, match="needs PyYAML.*pip install pyyaml.*as JSON"):
        load_pipeline(write(tmp_path, "p.yaml", YAML_FILE))
    assert load_pipeline(write(tmp_path, "p.json", json.dumps(SPEC))).name == "nightly"


def test_a_spec_model_is_checked_again_with_parameters_and_a_dict_goes_as_it_is() -> None:
    spec = PipelineSpec.model_validate(SPEC)
    assert pipeline_request(spec) is spec
    again = pipeline_request(spec, {"data": "ds_" + "d" * 26})
    assert isinstance(again, PipelineSpec) and again.parameters["data"] == "ds_" + "d" * 26
    loose = {**SPEC, "future_field": 1}
    assert pipeline_request(loose, {"data": "x"}) == {**loose, "parameters": {"data": "x"}}
    with pytest.raises(TypeError):
        pipeline_request(42)  # type: ignore[arg-type]


# ---- requests


def test_pipeline_from_a_file_posts_the_spec_with_an_idempotency_key(tmp_path: Path) -> None:
    script = Script(httpx.Response(201, json=pipeline_json("pending")))
    created = make_client(script).pipeline(write(tmp_path, "p.yaml", YAML_FILE), parameters={"epochs": "7"})
    (request,) = script.requests
    assert (request.method, request.url.path) == ("POST", "/v1/pipelines")
    assert request.headers["idempotency-key"].startswith("nexa-py-")
    body = json.loads(request.content)
    assert body["parameters"] == {"data": DS_ID, "epochs": "7"}
    assert body["steps"][0] == {
        "name": "audit",
        "type": "audit",
        "spec": {"dataset_uri": "{params.data}"},
        "gate": {"min_quality_tier": "B"},
    }
    assert created.pipeline_id == PL_ID and created.status is PipelineState.pending


def test_pipeline_keys_retries_and_the_spec_key() -> None:
    script = Script(httpx.Response(503), httpx.Response(200, json=pipeline_json()))
    client = make_client(script, max_retries=1)
    client.pipeline(SPEC, idempotency_key="nightly-1")
    assert [r.headers["idempotency-key"] for r in script.requests] == ["nightly-1", "nightly-1"]
    script = Script(httpx.Response(201, json=pipeline_json()))
    make_client(script).pipeline({**SPEC, "idempotency_key": "in-spec"})
    assert script.requests[0].headers["idempotency-key"] == "in-spec"
    with pytest.raises(ValueError, match="two different idempotency keys"):
        make_client(Script()).pipeline({**SPEC, "idempotency_key": "a"}, idempotency_key="b")


def test_get_list_cancel_resume_approve_send_the_documented_requests() -> None:
    page1 = {"items": [pipeline_json()], "next_cursor": "c1"}
    page2 = {"items": [pipeline_json("failed")], "next_cursor": None}
    script = Script(
        httpx.Response(200, json=pipeline_json()),
        httpx.Response(200, json=page1),
        httpx.Response(200, json=page2),
        httpx.Response(200, json=pipeline_json("cancelled")),
        httpx.Response(200, json=pipeline_json("running", runs=2)),
        httpx.Response(200, json=pipeline_json("running")),
    )
    client = make_client(script)
    assert client.get_pipeline(PL_ID).steps[1].status is StepState.running
    found = list(client.list_pipelines(status="failed", name="nightly", labels={"team": "ml"}, page_size=1))
    assert [p.status for p in found] == [PipelineState.running, PipelineState.failed]
    assert client.cancel_pipeline(PL_ID).status is PipelineState.cancelled
    assert client.resume_pipeline(PL_ID).runs == 2
    client.approve_step(PL_ID, "deploy")
    seen = [(r.method, r.url.path) for r in script.requests]
    assert seen == [
        ("GET", f"/v1/pipelines/{PL_ID}"),
        ("GET", "/v1/pipelines"),
        ("GET", "/v1/pipelines"),
        ("POST", f"/v1/pipelines/{PL_ID}/cancel"),
        ("POST", f"/v1/pipelines/{PL_ID}/resume"),
        ("POST", f"/v1/pipelines/{PL_ID}/steps/deploy/approve"),
    ]
    first, second = script.requests[1].url.params, script.requests[2].url.params
    assert first.multi_items() == [
        ("limit", "1"),
        ("status", "failed"),
        ("name", "nightly"),
        ("label", "team=ml"),
    ]
    assert second["cursor"] == "c1"
    assert "label=team%3Dml" in str(script.requests[1].url)


def test_one_page_of_pipelines_with_its_cursor() -> None:
    script = Script(httpx.Response(200, json={"items": [], "next_cursor": "c2"}))
    page = make_client(script).list_pipelines_page(limit=5, cursor="c1")
    assert page.next_cursor == "c2"
    assert script.requests[0].url.params.multi_items() == [("limit", "5"), ("cursor", "c1")]


def test_approve_and_resume_are_not_retried_and_conflicts_keep_their_code() -> None:
    script = Script(httpx.Response(503))
    with pytest.raises(InternalServerError):
        make_client(script, max_retries=3).resume_pipeline(PL_ID)
    assert len(script.requests) == 1
    conflict = {"error": {"type": "step_not_waiting", "message": "step deploy is running"}}
    with pytest.raises(ConflictError) as info:
        make_client(Script(httpx.Response(409, json=conflict))).approve_step(PL_ID, "deploy")
    assert info.value.error_type == "step_not_waiting"


def test_ids_are_quoted_into_one_path_segment() -> None:
    script = Script(httpx.Response(200, json=pipeline_json()))
    make_client(script).approve_step(PL_ID, "../cancel")
    assert script.requests[0].url.raw_path.decode() == f"/v1/pipelines/{PL_ID}/steps/..%2Fcancel/approve"


# ---- events


def event(seq: int, kind: str, step: str | None = None) -> str:
    data = json.dumps({"seq": seq, "at": NOW, "kind": kind, "step": step, "message": f"m{seq}"})
    return f"id: {seq}\nevent: {kind}\ndata: {data}\n\n"


class BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], error: Exception | None) -> None:
        self.chunks = chunks
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error


def sse(chunks: list[str], error: Exception | None = None) -> httpx.Response:
    stream = BrokenStream([c.encode() for c in chunks], error)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


def events_server() -> Script:
    """Events 1..5: the first stream breaks mid-event 3, the second closes early (a proxy), the third
    ends with the pipeline; an event kind this SDK does not know is skipped."""
    first = event(1, "created") + event(2, "step.started", "audit") + event(3, "step.completed", "audit")
    return Script(
        sse([first[:-10]], httpx.RemoteProtocolError("peer closed connection")),
        sse([event(3, "step.completed", "audit"), event(4, "step.future_kind", "train")]),
        sse([event(4, "step.started", "train"), event(5, "completed")]),
    )


def test_events_resume_after_drops_and_end_with_the_pipeline(sleeps: list[float]) -> None:
    server = events_server()
    got = list(make_client(server).pipeline_events(PL_ID))
    assert [(e.seq, e.kind) for e in got] == [
        (1, PipelineEventKind.created),
        (2, PipelineEventKind.step_started),
        (3, PipelineEventKind.step_completed),
        (4, PipelineEventKind.step_started),
        (5, PipelineEventKind.completed),
    ]
    assert [r.url.params.get("after") for r in server.requests] == [None, "2", "3"]
    assert all(r.url.params["follow"] == "true" for r in server.requests)
    assert server.requests[0].headers["accept"] == "text/event-stream"


def test_events_without_follow_end_at_the_first_close() -> None:
    server = Script(sse([event(8, "step.started", "train")]))
    got = list(make_client(server).pipeline_events(PL_ID, follow=False, after=7))
    assert [e.seq for e in got] == [8]
    assert server.requests[0].url.params.multi_items() == [("follow", "false"), ("after", "7")]


def test_a_resumed_pipeline_is_followed_past_its_earlier_end(sleeps: list[float]) -> None:
    server = Script(
        sse([event(1, "failed"), event(2, "resumed")]),  # closed early: the pipeline runs again
        sse([event(3, "completed")]),
    )
    assert [e.seq for e in make_client(server).pipeline_events(PL_ID)] == [1, 2, 3]
    assert len(server.requests) == 2


# ---- waiting


def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [100.0]
    monkeypatch.setattr(nexa.client, "_now", lambda: clock[0])

    def advance(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(nexa.client, "_sleep", advance)
    return clock


def test_wait_pipeline_returns_when_only_approvals_are_left(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch)
    script = Script(
        httpx.Response(200, json=pipeline_json("running")),
        httpx.Response(
            200, json=pipeline_json("waiting", {"audit": "completed", "train": "waiting_approval"})
        ),
    )
    seen: list[PipelineState] = []
    final = make_client(script).wait_pipeline(PL_ID, on_update=lambda p: seen.append(p.status))
    assert final.status is PipelineState.waiting
    assert seen == [PipelineState.running, PipelineState.waiting]


def test_wait_pipeline_can_wait_through_approvals_and_returns_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_clock(monkeypatch)
    script = Script(
        httpx.Response(200, json=pipeline_json("waiting")),
        httpx.Response(200, json=pipeline_json("failed", error={"code": "gate_failed", "message": "tier C"})),
    )
    final = make_client(script).wait_pipeline(PL_ID, until_waiting=False, poll_interval=0.5)
    assert final.status is PipelineState.failed and final.error is not None
    assert final.error.code == "gate_failed"


def test_wait_pipeline_times_out_with_the_last_state(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = fake_clock(monkeypatch)
    client = make_client(lambda r: httpx.Response(200, json=pipeline_json("running")))
    with pytest.raises(PipelineWaitTimeoutError, match=r"still running after 5s \(1/2 steps done\)") as info:
        client.wait_pipeline(PL_ID, timeout=5, poll_interval=2.0)
    assert isinstance(info.value, WaitTimeoutError)
    assert info.value.pipeline.pipeline_id == PL_ID
    assert clock[0] == 105.0
    with pytest.raises(ValueError):
        client.wait_pipeline(PL_ID, poll_interval=0)


# ---- lineage

LINEAGE = {
    "root": CKPT_ID,
    "direction": "up",
    "depth": 3,
    "nodes": [
        {"id": CKPT_ID, "kind": "checkpoint", "job_id": "job_" + "t" * 26, "job_type": "train"},
        {"id": DS_ID, "kind": "dataset", "name": "chat", "pipeline_id": PL_ID, "pipeline_step": "audit"},
        {"id": "s3://bucket/raw.jsonl", "kind": "external"},
        {"id": "ds_" + "z" * 26, "kind": "dataset", "missing": True, "future": "ignored"},
    ],
    "edges": [
        {"source": DS_ID, "target": CKPT_ID},
        {"source": "s3://bucket/raw.jsonl", "target": DS_ID},
        {"source": "ds_" + "z" * 26, "target": CKPT_ID},
    ],
    "truncated": False,
}


def test_lineage_asks_for_the_direction_and_depth_and_reads_the_graph() -> None:
    script = Script(httpx.Response(200, json=LINEAGE))
    graph = make_client(script).lineage(CKPT_ID, direction="up", depth=3)
    request = script.requests[0]
    assert request.url.path == f"/v1/artifacts/{CKPT_ID}/lineage"
    assert request.url.params.multi_items() == [("direction", "up"), ("depth", "3")]
    assert isinstance(graph, Lineage)
    assert graph.inputs_of(CKPT_ID) == [DS_ID, "ds_" + "z" * 26]
    assert graph.outputs_of(DS_ID) == [CKPT_ID]
    node = graph.node("ds_" + "z" * 26)
    assert node is not None and node.missing


def test_lineage_refuses_a_bad_direction_or_depth_before_sending() -> None:
    client = make_client(Script())
    with pytest.raises(ValueError, match="direction"):
        client.lineage(CKPT_ID, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth"):
        client.lineage(CKPT_ID, depth=-1)


# ---- the async client shares all of it


@pytest.mark.anyio
async def test_async_pipeline_wait_events_and_lineage(tmp_path: Path, sleeps: list[float]) -> None:
    script = Script(
        httpx.Response(201, json=pipeline_json("pending")),
        httpx.Response(200, json=pipeline_json("running")),
        httpx.Response(200, json=pipeline_json("completed", {"audit": "completed", "train": "cached"})),
        sse([event(1, "created"), event(2, "completed")]),
        httpx.Response(200, json=LINEAGE | {"direction": "both"}),
        httpx.Response(200, json={"items": [pipeline_json()], "next_cursor": None}),
    )
    async with AsyncNexaClient("nexa_testkey", BASE, transport=httpx.MockTransport(script)) as client:
        created = await client.pipeline(write(tmp_path, "p.json", json.dumps(SPEC)), idempotency_key="k")
        final = await client.wait_pipeline(created.pipeline_id, poll_interval=1.0)
        got = [e.seq async for e in client.pipeline_events(PL_ID)]
        graph = await client.lineage(CKPT_ID, direction="both")
        listed = [p.pipeline_id async for p in client.list_pipelines(limit=1)]
    assert final.status is PipelineState.completed and final.steps[1].status is StepState.cached
    assert got == [1, 2] and graph.direction == "both" and listed == [PL_ID]
    assert sleeps == [1.0]
    assert script.requests[0].headers["idempotency-key"] == "k"
