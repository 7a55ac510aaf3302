"""The nexa CLI against a mock gateway: argument parsing, request bodies, error rendering."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from nexa.cli import context
from nexa.cli.main import app
from nexa.client import NexaClient

JOB_ID = "job_" + "a" * 26
DS_ID = "ds_" + "b" * 26
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat()

Handler = Callable[[httpx.Request], httpx.Response]


def job_body(status: str = "pending", **extra: Any) -> dict[str, Any]:
    body = {
        "job_id": JOB_ID,
        "job_type": "audit",
        "status": status,
        "created_at": NOW,
        "updated_at": NOW,
        "progress": 1.0 if status == "completed" else 0.0,
        "attempts": 1,
        "labels": {"team": "ml"},
    }
    return body | extra


def error(status: int, type_: str, message: str, field: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": type_, "message": message, "field": field}})


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Install a mock gateway; returns the list the requests it saw are appended to."""

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


runner = CliRunner()


def test_audit_sends_the_spec_with_labels_priority_and_gpus(gateway: Any) -> None:
    seen = gateway(lambda request: httpx.Response(201, json=job_body()))
    result = runner.invoke(
        app, ["audit", DS_ID, "--label", "team=ml", "-l", "run=1", "--priority", "5", "--gpus", "1"]
    )
    assert result.exit_code == 0, result.output
    assert JOB_ID in result.stdout
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/v1/audit"
    body = json.loads(request.content)
    assert body["dataset_uri"] == DS_ID
    assert body["labels"] == {"team": "ml", "run": "1"}
    assert body["priority"] == 5 and body["resources"] == {"gpus": 1}


def test_container_takes_the_command_after_double_dash(gateway: Any) -> None:
    seen = gateway(lambda request: httpx.Response(201, json=job_body() | {"job_type": "container"}))
    result = runner.invoke(
        app, ["container", "python:3.11", "--env", "A=1", "--", "python", "-c", "print(1)"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(seen[0].content)
    assert body["image"] == "python:3.11"
    assert body["command"] == ["python", "-c", "print(1)"] and body["env"] == {"A": "1"}


def test_json_output_is_plain_json(gateway: Any) -> None:
    gateway(lambda request: httpx.Response(201, json=job_body()))
    result = runner.invoke(app, ["audit", DS_ID, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["job_id"] == JOB_ID


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["audit", DS_ID, "--label", "novalue"], "--label expects KEY=VALUE"),
        (["audit", DS_ID, "--priority", "500"], "priority"),
        (["train", DS_ID, "--model", "m", "--epochs", "0"], "epochs"),
        (["evaluate", "not-a-checkpoint"], "checkpoint_id"),
    ],
)
def test_invalid_input_is_one_red_line_naming_the_field_and_exit_2(
    gateway: Any, args: list[str], needle: str
) -> None:
    seen = gateway(lambda request: httpx.Response(500))
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert "Traceback" not in result.output
    assert seen == []  # refused before any round trip


def test_gateway_validation_error_names_the_field(gateway: Any) -> None:
    gateway(lambda request: error(422, "dataset_not_found", "no dataset ds_x", field="dataset_uri"))
    result = runner.invoke(app, ["audit", DS_ID])
    assert result.exit_code == 2
    assert "dataset_uri" in result.stderr and "no dataset ds_x" in result.stderr


def test_unreachable_gateway_says_how_to_start_one(gateway: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    gateway(refuse)
    result = runner.invoke(app, ["jobs", "list"])
    assert result.exit_code == 1
    assert "is Nexa running? try `nexa up`" in result.stderr
    assert "Traceback" not in result.output


def test_401_and_404_are_one_line_each(gateway: Any) -> None:
    gateway(lambda request: error(401, "unauthorized", "invalid API key"))
    result = runner.invoke(app, ["jobs", "get", JOB_ID])
    assert result.exit_code == 1 and "refused the API key" in result.stderr
    gateway(lambda request: error(404, "not_found", f"no job {JOB_ID}"))
    result = runner.invoke(app, ["jobs", "get", JOB_ID])
    assert result.exit_code == 1 and f"not found: no job {JOB_ID}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_jobs_list_passes_filters_and_renders_rows(gateway: Any) -> None:
    seen = gateway(
        lambda request: httpx.Response(200, json={"items": [job_body("running")], "next_cursor": None})
    )
    result = runner.invoke(
        app, ["jobs", "list", "--type", "audit", "--status", "running", "--label", "team=ml"]
    )
    assert result.exit_code == 0, result.output
    assert JOB_ID in result.stdout and "running" in result.stdout
    params = seen[0].url.params
    assert (
        params["type"] == "audit"
        and params["status"] == "running"
        and params.get_list("label") == ["team=ml"]
    )


def test_wait_exits_non_zero_when_the_job_failed(gateway: Any) -> None:
    failed = job_body("failed", error={"code": "engine_crashed", "message": "KeyError: x", "retryable": True})
    gateway(lambda request: httpx.Response(200, json=failed))
    result = runner.invoke(app, ["jobs", "wait", JOB_ID])
    assert result.exit_code == 1
    assert "engine_crashed" in result.stderr


def test_submit_and_wait_prints_the_result(gateway: Any) -> None:
    done = job_body("completed", result={"quality_tier": "gold", "num_rows": 10})

    def handler(request: httpx.Request) -> httpx.Response:
        return (
            httpx.Response(201, json=job_body())
            if request.method == "POST"
            else httpx.Response(200, json=done)
        )

    gateway(handler)
    result = runner.invoke(app, ["audit", DS_ID, "--wait"])
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout and "gold" in result.stdout


def test_cancel_of_a_finished_job_is_a_clear_conflict(gateway: Any) -> None:
    gateway(lambda request: error(409, "conflict", "job is already completed"))
    result = runner.invoke(app, ["jobs", "cancel", JOB_ID])
    assert result.exit_code == 1 and "job is already completed" in result.stderr


def test_keys_create_prints_the_key_once_with_a_warning(gateway: Any) -> None:
    created = {
        "key_id": "key_" + "c" * 26,
        "name": "ci",
        "prefix": "nexa_abcd",
        "tenant_id": "tnt_" + "d" * 26,
        "created_at": NOW,
        "key": "nexa_secretsecret",
    }
    seen = gateway(lambda request: httpx.Response(201, json=created))
    result = runner.invoke(app, ["keys", "create", "--name", "ci"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("nexa_secretsecret") == 1
    assert "will not be shown again" in result.stderr
    assert json.loads(seen[0].content)["name"] == "ci"


def test_datasets_upload_refuses_a_missing_file_before_any_request(gateway: Any, tmp_path: Any) -> None:
    seen = gateway(lambda request: httpx.Response(500))
    result = runner.invoke(app, ["datasets", "upload", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.stderr and seen == []


def test_worker_without_a_secret_says_what_to_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("NEXA_HOME", str(tmp_path))
    monkeypatch.delenv("NEXA_WORKER_SECRET", raising=False)
    result = runner.invoke(app, ["worker", "--gateway", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "NEXA_WORKER_SECRET" in result.stderr


def test_demo_summary_compares_found_with_planted() -> None:
    from rich.console import Console

    from nexa.cli.demo import planted_counts, summary_table

    planted = planted_counts({"num_rows": 100, "counts": {"exact_duplicate": 20, "pii": 3}})
    assert planted == {"exact_duplicate": 20, "pii": 3, "num_rows": 100}
    table = summary_table(
        {
            "num_rows": 100,
            "mean_score": 0.8,
            "quality_tier": "silver",
            "flag_counts": {"exact_duplicate": 19},
        },
        {"exact_duplicate": 20},
        1.5,
    )
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "silver" in text and "19" in text and "20" in text and "1.5 s" in text


def test_the_lifecycle_summary_is_readable_in_an_80_column_log() -> None:
    from rich.console import Console

    from nexa.cli.demo import Lifecycle, Step, id_cell, lifecycle_table

    ids = ["dp_v5gmo4mhvsdddcwukxqgxddpwe", "dp_h6uj7qj4iwy5wbwtdntipevooq"]
    figure = "tier D, mean score 0.612, 83 of 2000 rows flagged"
    run = Lifecycle(
        steps=[
            Step("auditing the generated data", "job_6sqivjvxkqxipbxsdhg3fesbai", "completed", figure, 0.4),
            Step("undeploy", id_cell(ids), "completed", "2 servers stopped", 1.1),
        ]
    )
    console = Console(width=80, record=True, color_system=None)
    console.print(lifecycle_table(run))
    text = console.export_text()
    assert "…" not in text
    for needle in ["job_6sqivjvxkqxipbxsdhg3fesbai", *ids, "completed", "SECONDS", "1.1"]:
        assert needle in text


def test_admin_grants_round_trip(tmp_path: Any) -> None:
    """`nexa admin grant/grants/revoke` against a real SQLite database, as a platform admin would."""
    url = f"sqlite:///{tmp_path / 'nexa.db'}"
    data = tmp_path / "data"
    data.mkdir()
    base = ["admin", "grant", "--database-url", url, "--tenant", "acme"]
    granted = runner.invoke(app, [*base, "--local-root", str(data)])
    assert granted.exit_code == 0, granted.output
    assert "granted" in granted.output
    again = runner.invoke(app, [*base, "--local-root", str(data)])
    assert "already granted" in again.output
    assert runner.invoke(app, [*base, "--s3-bucket", "acme-raw"]).exit_code == 0
    listed = runner.invoke(app, ["admin", "grants", "--database-url", url, "--tenant", "acme", "--json"])
    assert json.loads(listed.output) == {"local_roots": [str(data.resolve())], "s3_buckets": ["acme-raw"]}
    both = runner.invoke(app, [*base, "--local-root", str(data), "--s3-bucket", "x"])
    assert both.exit_code != 0 and "exactly one" in both.output
    revoke = ["admin", "revoke", "--database-url", url, "--tenant", "acme", "--local-root", str(data)]
    assert "revoked" in runner.invoke(app, revoke).output
    listed = runner.invoke(app, ["admin", "grants", "--database-url", url, "--tenant", "acme", "--json"])
    assert json.loads(listed.output)["local_roots"] == []


def test_ids_and_long_values_are_never_cut_when_output_is_not_a_terminal(gateway: Any) -> None:
    labels = {f"team-{i}": "x" * 40 for i in range(4)}
    gateway(
        lambda request: httpx.Response(
            200,
            json={
                "items": [
                    job_body(
                        "failed",
                        labels=labels,
                        error={"code": "dataset_not_found", "message": "m", "retryable": False},
                    )
                ],
                "next_cursor": None,
            },
        )
    )
    result = runner.invoke(app, ["jobs", "list"], env={"COLUMNS": ""})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if JOB_ID in line)
    assert "…" not in result.stdout and "dataset_not_found" in row
    assert ",".join(f"{k}={v}" for k, v in sorted(labels.items())) in row  # one line, whole


DP_ID = "dp_" + "c" * 26


def deployment_body(status: str = "running") -> dict[str, Any]:
    return {
        "deployment_id": DP_ID,
        "status": status,
        "checkpoint_id": "ckpt_" + "d" * 26,
        "openai_base_url": "http://127.0.0.1:9001/v1",
        "model_name": DP_ID,
        "created_at": NOW,
    }


def test_deployments_list_show_and_undeploy(gateway: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(200, json=deployment_body("stopping"))
        if request.url.path.endswith(DP_ID):
            return httpx.Response(200, json=deployment_body())
        return httpx.Response(
            200,
            json={
                "items": [
                    deployment_body(),
                    {**deployment_body("stopped"), "deployment_id": "dp_" + "e" * 26},
                ],
                "next_cursor": None,
            },
        )

    seen = gateway(handler)
    listed = runner.invoke(app, ["deployments", "list", "--running"])
    assert listed.exit_code == 0, listed.output
    assert DP_ID in listed.stdout and "dp_" + "e" * 26 not in listed.stdout  # --running keeps the live one
    assert "http://127.0.0.1:9001/v1" in listed.stdout
    shown = runner.invoke(app, ["deployments", "show", DP_ID, "--json"])
    assert json.loads(shown.stdout)["openai_base_url"] == "http://127.0.0.1:9001/v1"
    stopped = runner.invoke(app, ["deployments", "undeploy", DP_ID])
    assert stopped.exit_code == 0 and f"{DP_ID}: stopping" in stopped.stdout
    assert [r.method for r in seen][-1] == "DELETE" and seen[-1].url.path == f"/v1/deployments/{DP_ID}"


def test_keys_env_prints_shell_exports(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("NEXA_HOME", str(tmp_path))
    monkeypatch.setenv("NEXA_API_KEY", "nexa_it's")
    monkeypatch.setenv("NEXA_BASE_URL", "http://127.0.0.1:8080")
    result = runner.invoke(app, ["keys", "env"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "export NEXA_BASE_URL=http://127.0.0.1:8080",
        "export NEXA_API_KEY='nexa_it'\"'\"'s'",  # quoted for the shell, whatever the key holds
    ]
    monkeypatch.delenv("NEXA_API_KEY")
    assert runner.invoke(app, ["keys", "env"]).exit_code == 2


def test_down_lists_the_deployments_it_leaves_serving(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from nexa.cli import local
    from nexa.contracts.artifacts import Deployment

    monkeypatch.setattr(local, "_serving_deployments", lambda: [Deployment.model_validate(deployment_body())])
    result = runner.invoke(app, ["down", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "still serving (1)" in result.stdout and DP_ID in result.stdout
    assert "nexa deployments undeploy" in result.stdout


def test_a_relative_dataset_path_is_uploaded_and_sent_as_its_id(
    gateway: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nexa audit ./data/train.jsonl`: the server cannot read this machine's relative paths."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "hello"}\n')
    monkeypatch.chdir(tmp_path)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/datasets":
            assert b"train.jsonl" in request.content and b'{"text": "hello"}' in request.content
            return httpx.Response(
                201,
                json={
                    "dataset_id": DS_ID,
                    "name": "train.jsonl",
                    "format": "jsonl",
                    "size_bytes": 18,
                    "created_at": NOW,
                    "uri": f"internal://{DS_ID}",
                },
            )
        return httpx.Response(201, json=job_body())

    seen = gateway(handler)
    result = runner.invoke(app, ["audit", "./data/train.jsonl"])
    assert result.exit_code == 0, result.output
    assert [r.url.path for r in seen] == ["/v1/datasets", "/v1/audit"]
    assert json.loads(seen[1].content)["dataset_uri"] == DS_ID
    # Ids, URIs and absolute paths go to the server as written.
    for ref in (DS_ID, "s3://bucket/x.parquet", str(tmp_path / "data" / "train.jsonl"), "./missing.jsonl"):
        seen.clear()
        runner.invoke(app, ["audit", ref])
        assert [r.url.path for r in seen] == ["/v1/audit"] and json.loads(seen[0].content)[
            "dataset_uri"
        ] == ref


def test_the_async_client_uploads_local_files_too(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    from nexa import AsyncNexaClient

    (tmp_path / "prompts.csv").write_text("prompt\\nhi\\n")
    monkeypatch.chdir(tmp_path)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/datasets":
            return httpx.Response(
                201,
                json={
                    "dataset_id": DS_ID,
                    "name": "p",
                    "format": "csv",
                    "size_bytes": 9,
                    "created_at": NOW,
                    "uri": "u",
                },
            )
        return httpx.Response(201, json=job_body())

    async def go() -> None:
        async with AsyncNexaClient(
            api_key="nexa_test",
            base_url="http://nexa.test",
            transport=httpx.MockTransport(handler),
            max_retries=0,
        ) as client:
            await client.distill("prompts.csv", teacher="openai/gpt-4o-mini")

    anyio.run(go)
    assert [r.url.path for r in seen] == ["/v1/datasets", "/v1/distill"]
    assert json.loads(seen[1].content)["dataset_id"] == DS_ID


def test_submit_options_come_from_the_contracts(gateway: Any) -> None:
    seen = gateway(lambda request: httpx.Response(201, json=job_body()))
    result = runner.invoke(
        app,
        ["train", DS_ID, "--model", "Mistral-7B", "--max-steps", "5", "--lr", "1e-4", "--batch-size", "4",
         "--lora-r", "4", "--no-packing", "--deepspeed-stage", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(seen[0].content)
    assert body["max_steps"] == 5 and body["model"] == "Mistral-7B" and body["deepspeed_stage"] == 2
    assert body["hyperparameters"] == {"learning_rate": 1e-4, "batch_size": 4, "packing": False}
    assert body["lora"] == {"r": 4}
    assert "epochs" not in body  # left out: the contract's default (3) applies, not one of the CLI's own
    seen.clear()
    assert runner.invoke(app, ["train", DS_ID, "--lora"]).exit_code == 0
    assert json.loads(seen[0].content)["lora"] == {}
    seen.clear()
    result = runner.invoke(app, ["evaluate", "ckpt_" + "d" * 26, "--metrics", "exact_match", "--metrics", "judge",
                                 "--judge-base-url", "https://judge.example/v1", "--judge-model", "m"])  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(seen[0].content)
    assert body["metrics"] == ["exact_match", "judge"] and body["judge"]["model"] == "m"
    # A value the contract refuses is named before anything is sent.
    seen.clear()
    bad = runner.invoke(app, ["evaluate", "ckpt_" + "d" * 26, "--metrics", "bleu"])
    assert bad.exit_code == 2 and "metrics" in bad.output and seen == []


def test_every_field_of_every_job_is_an_option_with_help() -> None:
    from nexa.cli import submit
    from nexa.cli.options import contract_options
    from nexa.contracts.jobs import JOB_SPECS, JobType

    for command in submit.COMMANDS:
        name = getattr(command, "__name__", "container")
        if name == "container":
            continue
        model = JOB_SPECS[JobType(name)]
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0
        for option in contract_options(model, skip=submit.SHARED):
            if option.path[-1] == "":
                continue
            flag = "--" + "-".join(p for p in option.path if p != "hyperparameters").replace("_", "-")
            is_argument = len(option.path) == 1 and f"{{{option.path[0]}}}" in result.stdout
            assert is_argument or flag in result.stdout, (name, flag)
            info = model.model_fields[option.path[0]]
            for part in option.path[1:]:
                from nexa.cli.options import _unwrap

                nested, _ = _unwrap(info.annotation)
                info = nested.model_fields[part]
            assert info.description, f"{name}: {'.'.join(option.path)} has no description to show as help"


def test_a_relative_model_directory_is_uploaded_and_sent_as_its_checkpoint(
    gateway: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nexa train ./data.jsonl --model ./my-model`: a tar of the directory, then the job with its ckpt_ id."""
    import io
    import tarfile

    model = tmp_path / "my-model"
    model.mkdir()
    for name, data in (("config.json", b"{}"), ("model.safetensors", b"w"), ("pytorch_model.bin", b"p")):
        (model / name).write_bytes(data)
    (tmp_path / "data.jsonl").write_text('{"instruction": "a", "response": "b"}\n')
    monkeypatch.chdir(tmp_path)
    ckpt = "ckpt_" + "c" * 26
    archives: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            part = request.content.index(b'filename="my-model.tar"')
            start = request.content.index(b"\r\n\r\n", part) + 4
            with tarfile.open(fileobj=io.BytesIO(request.content[start:]), mode="r:") as tar:
                archives.append(sorted(tar.getnames()))
            body = {"checkpoint_id": ckpt, "name": "my-model", "uri": f"internal://{ckpt}", "created_at": NOW}
            return httpx.Response(201, json=body)
        if request.url.path == "/v1/datasets":
            body = {"dataset_id": DS_ID, "name": "d", "format": "jsonl", "created_at": NOW, "uri": "u"}
            return httpx.Response(201, json=body)
        return httpx.Response(201, json=job_body())

    seen = gateway(handler)
    result = runner.invoke(app, ["train", "./data.jsonl", "--model", "./my-model"])
    assert result.exit_code == 0, result.output
    assert [r.url.path for r in seen] == ["/v1/datasets", "/v1/models", "/v1/train"]
    # The pickled copy stays home: safetensors weights are there to load instead.
    assert archives == [["config.json", "model.safetensors"]]
    sent = json.loads(seen[2].content)
    assert sent["model"] == ckpt and sent["dataset_id"] == DS_ID
    # A hub id (no such directory here) goes to the server as written.
    seen.clear()
    runner.invoke(app, ["train", DS_ID, "--model", "org/model"])
    assert [r.url.path for r in seen] == ["/v1/train"] and json.loads(seen[0].content)["model"] == "org/model"


def test_nexa_billing_prints_the_total_and_the_jobs_behind_it(gateway: Any) -> None:
    bill = {
        "tenant_id": "t",
        "price_book": "spec",
        "start": "2026-12-01T00:00:00Z",
        "end": "2026-12-07T00:00:00Z",
        "total": "2.80",
        "total_cents": 280,
        "by_job_type": {"train": "2.50", "audit": "0.30"},
        "by_job": [
            {
                "job_id": "job_" + "t" * 26,
                "job_type": "train",
                "amount": "2.50",
                "amount_cents": 250,
                "lines": [{"kind": "gpu_hours", "quantity": "2", "amount": "2.50", "amount_cents": 250}],
            }
        ],
        "usage": {"gpu_hours": "2", "cpu_hours": "0.5"},
        "unpriced": {"cpu_hours": "0.5"},
    }
    seen = gateway(lambda request: httpx.Response(200, json=bill))
    result = runner.invoke(app, ["billing", "--start", "2026-12-01"])
    assert result.exit_code == 0, result.output
    assert seen[0].url.path == "/v1/billing/summary" and seen[0].url.params["start"].startswith("2026-12-01")
    assert "$2.80" in result.output and "job_" + "t" * 26 in result.output and "not priced" in result.output


def test_nexa_jobs_cost_sets_the_estimate_beside_the_charge(gateway: Any) -> None:
    cost = {
        "job_id": "job_" + "c" * 26,
        "job_type": "train",
        "price_book": "spec",
        "estimate": {
            "job_type": "train",
            "price_book": "spec",
            "total": "2.50",
            "total_cents": 250,
            "complete": True,
        },
        "charged": "3.125",
        "charged_cents": 313,
        "lines": [
            {
                "kind": "gpu_hours",
                "estimated_quantity": "2",
                "estimated_amount": "2.50",
                "quantity": "2.5",
                "amount": "3.125",
                "amount_cents": 313,
                "basis": "6 FLOPs x 7,000,000,000 parameters",
            }
        ],
    }
    seen = gateway(lambda request: httpx.Response(200, json=cost))
    result = runner.invoke(app, ["jobs", "cost", "job_" + "c" * 26])
    assert result.exit_code == 0, result.output
    assert seen[0].url.path == f"/v1/jobs/job_{'c' * 26}/cost"
    assert (
        "charged $3.12" in result.output
        and "estimated $2.50" in result.output
        and "gpu_hours" in result.output
    )


def test_nexa_workers_drain_resume_and_revoke(gateway: Any) -> None:
    node = {
        "worker_id": "wrk_" + "w" * 26,
        "name": "gpu-box",
        "state": "draining",
        "registered_at": NOW,
        "last_heartbeat_at": NOW,
    }
    seen = gateway(lambda request: httpx.Response(200, json=node))
    result = runner.invoke(app, ["workers", "drain", node["worker_id"], "--reason", "disk swap"])
    assert result.exit_code == 0, result.output
    assert seen[0].url.path == f"/v1/workers/{node['worker_id']}/drain"
    assert json.loads(seen[0].content) == {"reason": "disk swap"}
    assert "draining" in result.output
    for action in ("resume", "revoke"):
        assert runner.invoke(app, ["workers", action, node["worker_id"]]).exit_code == 0
    assert [r.url.path.rsplit("/", 1)[1] for r in seen] == ["drain", "resume", "revoke"]
