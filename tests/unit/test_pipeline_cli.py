"""``nexa pipeline`` and ``nexa lineage`` against a mock gateway: files, requests, tables, trees, exit codes."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

import nexa.client
from nexa.cli import context
from nexa.cli.lineage import lineage_tree
from nexa.cli.main import app
from nexa.cli.pipelines import EXIT_WAITING, exit_code, plan_table, steps_table
from nexa.client import NexaClient
from nexa.contracts.lineage import Lineage
from nexa.contracts.pipelines import Pipeline, PipelineSpec

PL_ID = "pl_" + "a" * 26
DS_ID = "ds_" + "b" * 26
CKPT_ID = "ckpt_" + "c" * 26
JOB_AUDIT = "job_" + "d" * 26
JOB_TRAIN = "job_" + "e" * 26
JOB_OLD = "job_" + "f" * 26
NOW = "2025-01-02T03:04:05Z"

SPEC: dict[str, Any] = {
    "name": "nightly",
    "parameters": {"data": DS_ID, "epochs": "3"},
    "steps": [
        {
            "name": "audit",
            "type": "audit",
            "spec": {"dataset_uri": "{params.data}"},
            "gate": {"min_quality_tier": "B"},
        },
        {
            "name": "train",
            "type": "train",
            "spec": {
                "dataset_id": "{steps.audit.outputs.dataset_id}",
                "model": "Qwen/Qwen2.5-0.5B",
                "epochs": "{params.epochs}",
            },
        },
        {
            "name": "evaluate",
            "type": "evaluate",
            "spec": {"checkpoint_id": "{steps.train.outputs.checkpoint_id}"},
        },
        {
            "name": "deploy",
            "type": "deploy",
            "approval": True,
            "needs": ["evaluate"],
            "spec": {"checkpoint_id": "{steps.train.outputs.checkpoint_id}"},
        },
    ],
}
TYPES = {"audit": "audit", "train": "train", "evaluate": "evaluate", "deploy": "deploy"}

Handler = Callable[[httpx.Request], httpx.Response]
runner = CliRunner()


def step(name: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": TYPES[name], "status": status, **extra}


def pipeline_json(status: str, steps: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "pipeline_id": PL_ID,
        "name": "nightly",
        "status": status,
        "created_at": NOW,
        "updated_at": NOW,
        "steps": steps or [step(n, "pending") for n in TYPES],
        "spec": SPEC,
        **extra,
    }


RUNNING = pipeline_json(
    "running",
    [
        step(
            "audit",
            "completed",
            job_id=JOB_AUDIT,
            gate={"passed": True, "reason": "quality tier A vs at least B"},
        ),
        step("train", "running", job_id=JOB_TRAIN, tries=2),
        step("evaluate", "pending"),
        step("deploy", "pending"),
    ],
)
COMPLETED = pipeline_json(
    "completed",
    [
        step("audit", "cached", cached_from=JOB_OLD, reason="cache hit"),
        step("train", "completed", job_id=JOB_TRAIN),
        step("evaluate", "completed"),
        step("deploy", "completed", approved_by="key_x"),
    ],
)
WAITING = pipeline_json(
    "waiting",
    [
        step("audit", "completed"),
        step("train", "completed"),
        step("evaluate", "completed"),
        step("deploy", "waiting_approval"),
    ],
)
FAILED = pipeline_json(
    "failed",
    [
        step(
            "audit",
            "failed",
            job_id=JOB_AUDIT,
            gate={"passed": False, "reason": "quality tier C vs at least B"},
        ),
        step("train", "skipped"),
        step("evaluate", "skipped"),
        step("deploy", "skipped"),
    ],
    error={"code": "gate_failed", "message": "quality tier C vs at least B", "step": "audit"},
)


def job_json(job_id: str, progress: float, message: str | None = None) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "job_type": "train",
        "status": "running",
        "created_at": NOW,
        "updated_at": NOW,
        "progress": progress,
        "progress_message": message,
    }


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Install a mock gateway (and sleeps that take no time); returns the requests it saw."""
    monkeypatch.setattr(nexa.client, "_sleep", lambda seconds: None)

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        def factory() -> NexaClient:
            return NexaClient(
                api_key="nexa_test",
                base_url="http://nexa.test",
                transport=httpx.MockTransport(record),
                max_retries=0,
            )

        monkeypatch.setattr(context, "client_factory", factory)
        return seen

    return install


def polls(*answers: dict[str, Any]) -> Handler:
    """POST answers the first pipeline; GETs of the pipeline walk through ``answers`` (the last repeats)."""
    left = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/jobs/"):
            return httpx.Response(
                200, json=job_json(request.url.path.rsplit("/", 1)[-1], 0.42, "step 42/100")
            )
        if request.method == "POST":
            return httpx.Response(201, json=pipeline_json("pending"))
        body = left.pop(0) if len(left) > 1 else left[0]
        return httpx.Response(200, json=body)

    return handler


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "nightly.json"
    path.write_text(json.dumps(SPEC))
    return path


def render(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=250, color_system=None, highlight=False).print(renderable)
    return out.getvalue()


# ---- the step table, from a Pipeline model


def test_the_step_table_says_why_each_step_is_where_it_is() -> None:
    running = render(steps_table(Pipeline.model_validate(RUNNING), {JOB_TRAIN: _job(0.42, "step 42/100")}))
    audit, train, evaluate, deploy = (line for line in running.splitlines()[2:] if line.strip())
    assert (
        "completed" in audit and JOB_AUDIT in audit and "gate passed: quality tier A vs at least B" in audit
    )
    assert "running" in train and "42% step 42/100" in train and "try 2" in train
    assert "waits for train" in evaluate
    assert "waits for evaluate, train" in deploy
    done = render(steps_table(Pipeline.model_validate(COMPLETED)))
    assert f"cached from {JOB_OLD}; cache hit" in done and "approved by key_x" in done
    waiting = render(steps_table(Pipeline.model_validate(WAITING)))
    assert f"needs approval: nexa pipeline approve {PL_ID} deploy" in waiting
    failed = render(steps_table(Pipeline.model_validate(FAILED)))
    assert "gate failed: quality tier C vs at least B" in failed
    assert failed.count("quality tier C") == 1  # the reason is the gate's: said once
    assert "not run: the pipeline stopped first" in failed


def _job(progress: float, message: str) -> Any:
    from nexa.contracts.jobs import Job

    return Job.model_validate(job_json(JOB_TRAIN, progress, message))


@pytest.mark.parametrize(
    ("body", "code"), [(COMPLETED, 0), (FAILED, 1), (WAITING, EXIT_WAITING), (RUNNING, 1)]
)
def test_exit_codes_follow_the_pipelines_state(body: dict[str, Any], code: int) -> None:
    assert exit_code(Pipeline.model_validate(body)) == code


def test_the_plan_table_lists_steps_in_the_order_they_can_run() -> None:
    text = render(plan_table(PipelineSpec.model_validate(SPEC)))
    rows = [line.split("│")[1].strip() for line in text.splitlines()[2:] if line.strip()]
    assert rows == ["audit", "train", "evaluate", "deploy"]
    assert "quality tier ≥ B" in text


# ---- nexa pipeline run / validate


def test_run_submits_the_file_with_params_and_prints_the_id(gateway: Any, pipeline_file: Path) -> None:
    seen = gateway(polls(RUNNING))
    result = runner.invoke(
        app, ["pipeline", "run", str(pipeline_file), "--param", "epochs=5", "-p", "data=" + DS_ID]
    )
    assert result.exit_code == 0, result.output
    assert PL_ID in result.stdout and f"nexa pipeline wait {PL_ID}" in result.stdout
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/v1/pipelines")
    assert json.loads(request.content)["parameters"] == {"data": DS_ID, "epochs": "5"}
    assert request.headers["idempotency-key"]


def test_run_wait_follows_the_steps_and_exits_0_when_completed(gateway: Any, pipeline_file: Path) -> None:
    seen = gateway(polls(RUNNING, COMPLETED))
    result = runner.invoke(app, ["pipeline", "run", str(pipeline_file), "--wait"])
    assert result.exit_code == 0, result.output
    assert f"train: running {JOB_TRAIN} (42% step 42/100; try 2)" in result.stdout
    assert f"cached from {JOB_OLD}" in result.stdout  # the final table
    assert f"pipeline {PL_ID} (nightly) completed" in result.stdout
    assert ("GET", f"/v1/jobs/{JOB_TRAIN}") in [(r.method, r.url.path) for r in seen]


def test_run_wait_exits_1_when_the_pipeline_failed(gateway: Any, pipeline_file: Path) -> None:
    gateway(polls(FAILED))
    result = runner.invoke(app, ["pipeline", "run", str(pipeline_file), "--wait"])
    assert result.exit_code == 1
    assert "failed at step audit: gate_failed: quality tier C vs at least B" in result.stderr
    assert f"nexa pipeline resume {PL_ID} --wait" in result.stderr
    assert "Traceback" not in result.output


def test_run_wait_stops_at_an_approval_with_exit_3_and_says_how(gateway: Any, pipeline_file: Path) -> None:
    gateway(polls(RUNNING, WAITING))
    result = runner.invoke(app, ["pipeline", "run", str(pipeline_file), "--wait"])
    assert result.exit_code == EXIT_WAITING == 3
    assert f"nexa pipeline approve {PL_ID} deploy" in result.stderr


def test_run_wait_json_prints_only_the_final_pipeline_on_stdout(gateway: Any, pipeline_file: Path) -> None:
    gateway(polls(RUNNING, COMPLETED))
    result = runner.invoke(app, ["pipeline", "run", str(pipeline_file), "--wait", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "completed"


def test_run_wait_timeout_exits_1_saying_it_goes_on(
    gateway: Any, pipeline_file: Path, monkeypatch: Any
) -> None:
    clock = [0.0]
    monkeypatch.setattr(nexa.client, "_now", lambda: clock[0])
    monkeypatch.setattr(nexa.client, "_sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    gateway(polls(RUNNING))
    result = runner.invoke(app, ["pipeline", "run", str(pipeline_file), "--wait", "--timeout", "5"])
    assert result.exit_code == 1
    assert "still running after 5.0s" in result.stderr and "keeps going" in result.stderr


def test_a_bad_file_lists_every_problem_exits_2_and_sends_nothing(gateway: Any, tmp_path: Path) -> None:
    seen = gateway(polls(RUNNING))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SPEC, "name": "Nightly", "steps": [{**SPEC["steps"][0], "type": "trian"}]}))
    result = runner.invoke(app, ["pipeline", "run", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: 2 problems" in result.stderr
    assert "steps[0] (audit).type" in result.stderr and "- name:" in result.stderr
    assert seen == [] and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--param", "novalue"], "--param expects KEY=VALUE"),
        (["--param", "typo=1"], "parameter 'typo' is not declared"),
    ],
)
def test_bad_params_are_usage_errors(gateway: Any, pipeline_file: Path, args: list[str], needle: str) -> None:
    seen = gateway(polls(RUNNING))
    result = runner.invoke(app, ["pipeline", "run", str(pipeline_file), *args])
    assert result.exit_code == 2 and needle in result.stderr and seen == []


def test_validate_checks_locally_without_a_gateway(
    monkeypatch: pytest.MonkeyPatch, pipeline_file: Path
) -> None:
    def no_client() -> NexaClient:
        raise AssertionError("validate must not talk to a gateway")

    monkeypatch.setattr(context, "client_factory", no_client)
    result = runner.invoke(app, ["pipeline", "validate", str(pipeline_file), "-p", "epochs=2"])
    assert result.exit_code == 0, result.output
    assert "pipeline nightly, 4 steps" in result.stdout and "epochs=2" in result.stdout
    missing = runner.invoke(app, ["pipeline", "validate", str(pipeline_file) + ".nope"])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


# ---- get, list, cancel, resume, approve, events


def test_get_shows_the_heading_steps_and_error(gateway: Any) -> None:
    gateway(polls(FAILED))
    result = runner.invoke(app, ["pipeline", "get", PL_ID])
    assert result.exit_code == 0, result.output
    assert f"pipeline {PL_ID} nightly: failed (0/4 steps done)" in result.stdout
    assert "error gate_failed (step audit): quality tier C vs at least B" in result.stdout


def test_list_passes_filters_and_renders_rows(gateway: Any) -> None:
    seen = gateway(lambda r: httpx.Response(200, json={"items": [FAILED, COMPLETED], "next_cursor": None}))
    result = runner.invoke(
        app, ["pipeline", "list", "--status", "failed", "--name", "nightly", "-l", "team=ml", "-n", "5"]
    )
    assert result.exit_code == 0, result.output
    assert seen[0].url.params.multi_items() == [
        ("limit", "5"),
        ("status", "failed"),
        ("name", "nightly"),
        ("label", "team=ml"),
    ]
    assert "gate_failed (audit)" in result.stdout and "4/4" in result.stdout


def test_cancel_resume_and_approve(gateway: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/resume"):
            return httpx.Response(
                409, json={"error": {"type": "pipeline_not_resumable", "message": "pipeline is running"}}
            )
        if request.url.path.endswith("/approve"):
            return httpx.Response(200, json=RUNNING)
        return httpx.Response(200, json=pipeline_json("cancelled"))

    seen = gateway(handler)
    cancelled = runner.invoke(app, ["pipeline", "cancel", PL_ID])
    assert cancelled.exit_code == 0 and f"pipeline {PL_ID} is cancelled" in cancelled.stdout
    refused = runner.invoke(app, ["pipeline", "resume", PL_ID])
    assert refused.exit_code == 1 and "conflict: pipeline is running" in refused.stderr
    approved = runner.invoke(app, ["pipeline", "approve", PL_ID, "deploy"])
    assert approved.exit_code == 0 and "approved step deploy" in approved.stdout
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", f"/v1/pipelines/{PL_ID}/cancel"),
        ("POST", f"/v1/pipelines/{PL_ID}/resume"),
        ("POST", f"/v1/pipelines/{PL_ID}/steps/deploy/approve"),
    ]


def test_approve_wait_follows_to_the_end(gateway: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=RUNNING if request.method == "POST" else COMPLETED)

    gateway(handler)
    result = runner.invoke(app, ["pipeline", "approve", PL_ID, "deploy", "--wait"])
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout


def sse_event(seq: int, kind: str, step_name: str | None = None) -> str:
    data = {"seq": seq, "at": NOW, "kind": kind, "step": step_name, "job_id": None, "message": f"m{seq}"}
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


def test_events_print_one_line_each_or_json_lines(gateway: Any) -> None:
    body = sse_event(1, "created") + sse_event(2, "step.started", "audit")
    seen = gateway(lambda r: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"}))
    result = runner.invoke(app, ["pipeline", "events", PL_ID, "--after", "0"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "step.started" in lines[1] and "audit" in lines[1] and "m2" in lines[1]
    assert seen[0].url.params.multi_items() == [("follow", "false"), ("after", "0")]
    as_json = runner.invoke(app, ["pipeline", "events", PL_ID, "--json"])
    assert [json.loads(line)["seq"] for line in as_json.stdout.splitlines()] == [1, 2]


# ---- lineage

JOB_T = "job_" + "t" * 26
DS_0, DS_1, DS_2 = ("ds_" + c * 26 for c in "xyz")
RAW = "s3://bucket/raw.jsonl"
# ckpt <- ds1, ds2; ds1 <- ds0; ds2 <- ds0 (a shared ancestor); ds0 <- s3 (external); ds2 <- a deleted input
SHARED = {
    "root": CKPT_ID,
    "direction": "up",
    "depth": 10,
    "nodes": [
        {"id": CKPT_ID, "kind": "checkpoint", "name": "tuned", "job_id": JOB_T, "job_type": "train"},
        {"id": DS_1, "kind": "dataset", "name": "train", "pipeline_id": PL_ID, "pipeline_step": "audit"},
        {"id": DS_2, "kind": "dataset", "name": "holdout"},
        {"id": DS_0, "kind": "dataset", "name": "raw"},
        {"id": RAW, "kind": "external"},
        {"id": "ds_" + "q" * 26, "kind": "dataset", "missing": True},
    ],
    "edges": [
        {"source": DS_1, "target": CKPT_ID},
        {"source": DS_2, "target": CKPT_ID},
        {"source": DS_0, "target": DS_1},
        {"source": DS_0, "target": DS_2},
        {"source": RAW, "target": DS_0},
        {"source": "ds_" + "q" * 26, "target": DS_2},
    ],
    "truncated": False,
}


def test_a_shared_ancestor_is_shown_once_then_referenced() -> None:
    text = render(lineage_tree(Lineage.model_validate(SHARED)))
    lines = text.splitlines()
    assert lines[0].startswith(f"{CKPT_ID} checkpoint tuned (train {JOB_T})")
    assert f"{DS_1} dataset train ({PL_ID}/audit)" in text
    assert text.count(DS_0) == 2 and text.count(RAW) == 1  # its subtree printed once
    first, second = (i for i, line in enumerate(lines) if DS_0 in line)
    assert "(shown above)" not in lines[first] and "(shown above)" in lines[second]
    assert RAW in lines[first + 1] and "external input" in lines[first + 1]
    assert "deleted" in text


def test_down_and_both_and_a_cycle_still_end() -> None:
    down = Lineage.model_validate({**SHARED, "root": DS_0, "direction": "down"})
    text = render(lineage_tree(down))
    assert text.count(CKPT_ID) == 2 and "(shown above)" in text
    both = render(lineage_tree(Lineage.model_validate({**SHARED, "root": DS_1, "direction": "both"})))
    assert "made from" in both and "used to make" in both and DS_0 in both and CKPT_ID in both
    cycle = {
        "root": DS_0,
        "direction": "up",
        "depth": 5,
        "nodes": [],
        "edges": [{"source": DS_1, "target": DS_0}, {"source": DS_0, "target": DS_1}],
    }
    assert "(shown above)" in render(lineage_tree(Lineage.model_validate(cycle)))


def test_nexa_lineage_asks_the_gateway_and_prints_the_tree(gateway: Any) -> None:
    seen = gateway(lambda r: httpx.Response(200, json={**SHARED, "depth": 3, "truncated": True}))
    result = runner.invoke(app, ["lineage", CKPT_ID, "--depth", "3"])
    assert result.exit_code == 0, result.output
    assert seen[0].url.path == f"/v1/artifacts/{CKPT_ID}/lineage"
    assert seen[0].url.params.multi_items() == [("direction", "up"), ("depth", "3")]
    assert RAW in result.stdout and "ask for a larger depth (--depth 6)" in result.stdout
    down = runner.invoke(app, ["lineage", CKPT_ID, "--down", "--json"])
    assert down.exit_code == 0 and json.loads(down.stdout)["root"] == CKPT_ID
    assert seen[1].url.params["direction"] == "down"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--up", "--down"], 2, "choose one of --up, --down and --both"),
        (["--depth", "51"], 2, "less than or equal to 50"),
    ],
)
def test_nexa_lineage_usage_errors(gateway: Any, args: list[str], code: int, needle: str) -> None:
    seen = gateway(lambda r: httpx.Response(200, json=SHARED))
    result = runner.invoke(app, ["lineage", CKPT_ID, *args])
    assert result.exit_code == code and needle in result.output and seen == []


def test_nexa_lineage_of_an_unknown_artifact_is_one_line(gateway: Any) -> None:
    gateway(
        lambda r: httpx.Response(404, json={"error": {"type": "not_found", "message": "no such artifact"}})
    )
    result = runner.invoke(app, ["lineage", CKPT_ID])
    assert result.exit_code == 1 and "not found: no such artifact" in result.stderr
    assert "Traceback" not in result.output


def test_ctrl_c_while_following_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from nexa.cli.context import handle_errors

    @handle_errors
    def following() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as stopped:
        following()
    assert stopped.value.exit_code == 130
    assert "interrupted" in capsys.readouterr().err
