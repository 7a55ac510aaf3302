"""The pure parts of storage billing and deletion: hours and subjects, GB-months, when the loop wakes,
which inputs a manifest names, the 409's wording, and the CLI's delete commands against a mock gateway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from nexa.cli import context
from nexa.cli.main import app
from nexa.client import NexaClient
from nexa.contracts import ArtifactDependent, ArtifactManifest, InputSource
from nexa.ids import new_id
from nexa_gateway.errors import ApiError
from nexa_gateway.services import deletion, storagemeter
from nexa_gateway.services.artifacts import input_ids

TENANT = "tnt_" + "a" * 26


def test_the_hour_of_the_month_and_its_subject() -> None:
    assert storagemeter.hour_of_month(datetime(2026, 12, 1, 0, 59, tzinfo=UTC)) == ("202612", 0)
    assert storagemeter.hour_of_month(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == ("202612", 743)
    # Another zone is the same instant: hours are counted in UTC.
    from zoneinfo import ZoneInfo

    assert storagemeter.hour_of_month(datetime(2027, 1, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))) == (
        "202612",
        743,
    )
    subject = storagemeter.storage_subject(TENANT, "202612")
    assert subject == f"st-{TENANT}-202612" and len(subject) == 40  # usage.job_id holds 40
    long = storagemeter.storage_subject("tenant-" + "x" * 60, "202612")
    assert len(long) == 40 and long != storagemeter.storage_subject("tenant-" + "y" * 60, "202612")


def test_gb_months_are_bytes_over_a_billion_over_730_hours() -> None:
    assert storagemeter.gb_months(730 * 10**9) == 1.0
    assert storagemeter.gb_months(10**9, hours=730) == 1.0
    assert storagemeter.gb_months(0) == 0.0


def test_the_loop_wakes_at_each_hour_so_none_is_missed() -> None:
    at = datetime(2026, 12, 7, 10, 59, 30, tzinfo=UTC)
    assert storagemeter.seconds_to_next_tick(3600, at) == pytest.approx(31.0)  # just past 11:00
    assert storagemeter.seconds_to_next_tick(60, at) == pytest.approx(31.0)  # the hour comes first
    assert storagemeter.seconds_to_next_tick(60, at.replace(minute=30)) == 60
    assert storagemeter.seconds_to_next_tick(3600, at.replace(minute=0, second=0)) == pytest.approx(3600)
    assert storagemeter.seconds_to_next_tick(0.01, at) == 1.0  # never a busy loop


def test_a_manifest_names_its_inputs_by_id_or_by_uri() -> None:
    ds, ckpt, dp, own = new_id("ds"), new_id("ckpt"), new_id("dp"), new_id("ev")
    manifest = ArtifactManifest(
        artifact_id=own,
        kind="eval",
        created_at=datetime.now(UTC),
        files=[],
        inputs=[
            InputSource(uri=f"internal://{ds}"),
            InputSource(uri="s3://bucket/checkpoints/x", artifact_id=ckpt),
            InputSource(uri=f"/srv/nexa/artifacts/deployments/{dp}/deployment.json"),
            InputSource(uri="hf://datasets/owner/name/file.parquet"),
            InputSource(uri=f"teacher:{own}"),  # itself: never its own dependent
            InputSource(uri="internal://ds_tooshort"),
        ],
    )
    assert input_ids(manifest) == {ds, ckpt, dp}


def _dependent(id_: str, blocking: bool) -> ArtifactDependent:
    return ArtifactDependent(kind="job" if blocking else "artifact", id=id_, reason="why", blocking=blocking)


def test_the_refusal_names_what_blocks_and_what_force_would_do() -> None:
    ds = new_id("ds")
    made = _dependent(new_id("ckpt"), blocking=False)
    deletion._refuse_if_needed(ds, [], force=False)  # nothing depends on it
    deletion._refuse_if_needed(ds, [(ds, made)], force=True)  # only artifacts: force goes past them
    with pytest.raises(deletion.InUse) as refused:
        deletion._refuse_if_needed(ds, [(ds, made)], force=False)
    assert refused.value.status_code == 409 and refused.value.type == "artifact_in_use"
    assert made.id in refused.value.message and "force=true" in refused.value.message
    job = _dependent(new_id("job"), blocking=True)
    with pytest.raises(deletion.InUse) as refused:
        deletion._refuse_if_needed(ds, [(ds, made), (ds, job)], force=True)
    assert job.id in refused.value.message and "does not delete past them" in refused.value.message
    many = [(ds, _dependent(new_id("ckpt"), blocking=False)) for _ in range(25)]
    with pytest.raises(deletion.InUse) as refused:
        deletion._refuse_if_needed(ds, many, force=False)
    assert "and 15 more" in refused.value.message and len(refused.value.dependents) == 25


def test_jobs_cannot_be_deleted_in_cluster_mode() -> None:
    state: Any = SimpleNamespace(settings=SimpleNamespace(backend="kubernetes"))
    with pytest.raises(ApiError) as refused:
        deletion.delete_job(None, state, TENANT, new_id("job"), force=False)  # type: ignore[arg-type]
    assert refused.value.status_code == 501 and refused.value.type == "not_supported"
    assert "kubectl delete nexajob" in refused.value.message


def test_unfinished_jobs_are_read_once_and_matched_by_id() -> None:
    calls = []
    ds = new_id("ds")

    def load() -> list[tuple[str, str, str, str]]:
        calls.append(1)
        return [
            ("job_1", "running", "audit", f'{{"dataset_uri": "internal://{ds}"}}'),
            ("job_2", "pending", "train", "{}"),
        ]

    jobs = deletion.UnfinishedJobs(load)
    assert jobs.naming(ds) == [("job_1", "running", "audit")]
    assert jobs.naming(new_id("ds")) == [] and calls == [1]


# ---------------------------------------------------------------- the CLI

runner = CliRunner()
NOW = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(handler: Any) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        monkeypatch.setattr(
            context,
            "client_factory",
            lambda: NexaClient(
                api_key="nexa_test",
                base_url="http://nexa.test",
                transport=httpx.MockTransport(record),
                max_retries=0,
            ),
        )
        return seen

    return install


def test_cli_delete_prints_what_went_and_sends_force(gateway: Any) -> None:
    ds, ckpt = new_id("ds"), new_id("ckpt")
    body = {
        "deleted": [{"artifact_id": ds, "kind": "dataset", "size_bytes": 2048}],
        "bytes_freed": 2048,
        "left_dependents": [
            {"kind": "artifact", "id": ckpt, "reason": "checkpoint made from it", "blocking": False}
        ],
    }
    seen = gateway(lambda request: httpx.Response(200, json=body))
    result = runner.invoke(app, ["datasets", "delete", ds, "--force"])
    assert result.exit_code == 0, result.output
    assert seen[0].method == "DELETE" and seen[0].url.path == f"/v1/datasets/{ds}"
    assert seen[0].url.params["force"] == "true"
    assert f"deleted {ds} (dataset, 2.0 KiB)" in result.stdout and ckpt in result.stdout
    result = runner.invoke(app, ["artifacts", "delete", ds])
    assert result.exit_code == 0 and "force" not in seen[-1].url.params


def test_cli_delete_refused_prints_the_dependents_then_the_error(gateway: Any) -> None:
    ds, job = new_id("ds"), new_id("job")
    error = {
        "error": {
            "type": "artifact_in_use",
            "message": f"{ds} is in use: {job} (running audit job that reads it). Not deleted: …",
            "errors": [
                {
                    "field": ds,
                    "dependent": job,
                    "kind": "job",
                    "message": "running audit job",
                    "blocking": "true",
                }
            ],
        }
    }
    gateway(lambda request: httpx.Response(409, json=error))
    result = runner.invoke(app, ["artifacts", "delete", ds], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert job in result.stderr and "no: blocks" in result.stderr and "is in use" in result.stderr


def test_cli_dependents_and_job_delete(gateway: Any) -> None:
    ds, job = new_id("ds"), new_id("job")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(
                200,
                json={"artifact_id": ds, "dependents": [], "deletable": True, "deletable_with_force": True},
            )
        return httpx.Response(
            409, json={"error": {"type": "job_not_finished", "message": f"job {job} is running"}}
        )

    seen = gateway(handler)
    result = runner.invoke(app, ["artifacts", "dependents", ds])
    assert result.exit_code == 0 and "nothing depends on" in result.stdout
    assert seen[0].url.path == f"/v1/artifacts/{ds}/dependents"
    result = runner.invoke(app, ["jobs", "delete", job])
    assert result.exit_code == 1 and "is running" in result.stderr and seen[-1].url.path == f"/v1/jobs/{job}"
