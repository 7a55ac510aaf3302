"""The worker loop's pure logic: log batching, progress throttling, fencing (409), final reports."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexa.contracts import (
    ClaimedJob,
    FailReport,
    HeartbeatAck,
    JobType,
    ResultReport,
    WorkerRegister,
    WorkerRegistered,
)
from nexa_engines.attempt import json_result
from nexa_engines.engine import EngineContext, EngineError, JobCancelled
from nexa_engines.hardware import gpu_model
from nexa_engines.reporting import MAX_BATCH_CHARS, MAX_LINE_CHARS, AttemptState, JobReporter, heartbeat_once
from nexa_engines.worker import WorkerRuntime, _parse_args, final_report_for, run_attempt
from nexa_engines.worker_client import GatewayUnavailable, StaleAttempt, WorkerClient
from nexa_store.local import LocalArtifactStore

JOB_ID = "job_" + "a" * 26


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeGateway:
    """Records reports; raises what the test queues up, per route."""

    def __init__(self) -> None:
        self.log_batches: list[list[str]] = []
        self.progress_reports: list[tuple[float, str | None]] = []
        self.progress_usage: list[list[Any]] = []
        self.completed: list[ResultReport] = []
        self.failed: list[FailReport] = []
        self.heartbeats = 0
        self.raise_on: dict[str, Exception] = {}
        self.cancel_requested = False

    def _maybe_raise(self, route: str) -> None:
        exc = self.raise_on.get(route)
        if exc is not None:
            raise exc

    def logs(self, job_id: str, attempt: int, lines: list[str], *, retry_for: float = 0) -> None:
        self._maybe_raise("logs")
        self.log_batches.append(list(lines))

    def progress(
        self,
        job_id: str,
        attempt: int,
        fraction: float,
        message: str | None,
        *,
        retry_for: float = 0,
        usage: list[Any] | None = None,
    ) -> None:
        self._maybe_raise("progress")
        self.progress_reports.append((fraction, message))
        self.progress_usage.append(list(usage or []))

    def heartbeat(self, job_id: str, attempt: int, *, retry_for: float = 0) -> HeartbeatAck:
        self._maybe_raise("heartbeat")
        self.heartbeats += 1
        return HeartbeatAck(
            lease_expires_at=datetime.now(UTC) + timedelta(seconds=30), cancel_requested=self.cancel_requested
        )

    def complete(self, job_id: str, report: ResultReport, *, retry_for: float = 0) -> None:
        self._maybe_raise("complete")
        self.completed.append(report)

    def fail(self, job_id: str, report: FailReport, *, retry_for: float = 0) -> None:
        self._maybe_raise("fail")
        self.failed.append(report)

    @property
    def all_lines(self) -> list[str]:
        return [line for batch in self.log_batches for line in batch]


def claimed(job_type: JobType = JobType.audit, spec: dict[str, Any] | None = None) -> ClaimedJob:
    return ClaimedJob(
        job_id=JOB_ID,
        job_type=job_type,
        attempt=2,
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=30),
        spec=spec if spec is not None else {"dataset_uri": "ds_" + "b" * 26},
        tenant_id="tnt_" + "c" * 26,
        artifacts_uri="/tmp/artifacts",
    )


def reporter_for(gateway: FakeGateway, clock: Clock) -> tuple[JobReporter, AttemptState]:
    state = AttemptState(claimed=claimed())
    return JobReporter(gateway, state, clock=clock), state


def test_log_lines_wait_for_the_flush_interval_then_go_in_one_batch() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, _ = reporter_for(gateway, clock)
    for i in range(150):
        reporter.log(f"line {i}")
    reporter.pump()
    assert gateway.log_batches == []
    clock.now += 0.6
    reporter.pump()
    assert gateway.log_batches == [[f"line {i}" for i in range(150)]]


def test_200_waiting_lines_go_out_before_the_interval() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, _ = reporter_for(gateway, clock)
    for i in range(199):
        reporter.log(f"line {i}")
    assert not reporter.wake.is_set()
    reporter.pump()
    assert gateway.log_batches == []
    reporter.log("line 199")
    assert reporter.wake.is_set()
    reporter.pump()
    assert gateway.all_lines == [f"line {i}" for i in range(200)]


def test_a_huge_backlog_is_split_at_the_request_limit() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, _ = reporter_for(gateway, clock)
    for i in range(25_000):
        reporter.log(str(i))
    reporter.pump()
    assert [len(b) for b in gateway.log_batches] == [10_000, 10_000, 5_000]
    assert gateway.all_lines == [str(i) for i in range(25_000)]


def test_multi_line_strings_become_separate_lines() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, _ = reporter_for(gateway, clock)
    reporter.log("first\nsecond")
    reporter.pump(force=True)
    assert gateway.all_lines == ["first", "second"]


def test_progress_is_throttled_and_always_sends_the_latest_value() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, _ = reporter_for(gateway, clock)
    reporter.progress(0.1, "reading")
    reporter.pump()
    for fraction in (0.2, 0.3, 0.4):
        reporter.progress(fraction, f"at {fraction}")
        clock.now += 0.2
        reporter.pump()
    assert gateway.progress_reports == [(0.1, "reading")]
    clock.now += 1.0
    reporter.pump()
    assert gateway.progress_reports == [(0.1, "reading"), (0.4, "at 0.4")]
    reporter.progress(1.0, "done")
    reporter.pump(force=True)
    assert gateway.progress_reports[-1] == (1.0, "done")


def test_lines_survive_an_unreachable_gateway_in_order() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, _ = reporter_for(gateway, clock)
    reporter.log("a")
    reporter.log("b")
    gateway.raise_on["logs"] = GatewayUnavailable("down")
    reporter.pump(force=True)
    reporter.log("c")
    del gateway.raise_on["logs"]
    reporter.pump(force=True)
    assert gateway.all_lines == ["a", "b", "c"]


def test_buffer_overflow_drops_oldest_lines_and_says_so() -> None:
    gateway, clock = FakeGateway(), Clock()
    state = AttemptState(claimed=claimed())
    reporter = JobReporter(gateway, state, clock=clock, max_buffered=5, max_batch=1000)
    for i in range(8):
        reporter.log(str(i))
    reporter.pump(force=True)
    assert "3 earlier log lines were dropped" in gateway.all_lines[0]
    assert gateway.all_lines[1:] == ["3", "4", "5", "6", "7"]


def test_log_batches_stay_under_the_gateways_body_cap() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, _ = reporter_for(gateway, clock)
    reporter.log("x" * 100_000)
    for _ in range(400):
        reporter.log("y" * 8000)
    reporter.pump(force=True)
    assert len(gateway.log_batches) > 1
    assert all(sum(len(line) for line in batch) <= MAX_BATCH_CHARS + 8192 for batch in gateway.log_batches)
    cut = gateway.all_lines[0]
    assert len(cut) <= MAX_LINE_CHARS and cut.endswith("chars cut]")
    assert gateway.all_lines[1:] == ["y" * 8000] * 400  # every line, in order


def test_a_409_on_logs_marks_the_attempt_lost_and_stops_all_reporting() -> None:
    gateway, clock = FakeGateway(), Clock()
    reporter, state = reporter_for(gateway, clock)
    reporter.log("x")
    reporter.progress(0.5)
    gateway.raise_on["logs"] = StaleAttempt("stale_attempt")
    reporter.pump(force=True)
    assert state.lost and state.cancel_event.is_set()
    assert gateway.progress_reports == []
    del gateway.raise_on["logs"]
    reporter.log("after")
    reporter.pump(force=True)
    assert gateway.log_batches == []
    assert state.take_final_report() is False


def test_heartbeat_turns_a_user_cancel_into_the_cancel_event() -> None:
    gateway = FakeGateway()
    state = AttemptState(claimed=claimed())
    heartbeat_once(gateway, state, retry_for=1)
    assert not state.cancel_event.is_set()
    gateway.cancel_requested = True
    heartbeat_once(gateway, state, retry_for=1)
    assert state.user_cancelled and state.cancel_event.is_set() and not state.lost


def test_heartbeat_409_means_lost_and_a_network_error_does_not() -> None:
    gateway = FakeGateway()
    state = AttemptState(claimed=claimed())
    gateway.raise_on["heartbeat"] = GatewayUnavailable("down")
    heartbeat_once(gateway, state, retry_for=1)
    assert not state.cancel_event.is_set()
    gateway.raise_on["heartbeat"] = StaleAttempt("stale")
    heartbeat_once(gateway, state, retry_for=1)
    assert state.lost and state.cancel_event.is_set()


@pytest.mark.parametrize(
    ("error", "setup", "code", "retryable"),
    [
        (RuntimeError("boom"), None, "engine_crashed", True),
        (EngineError("dataset_not_found", "no ds"), None, "dataset_not_found", False),
        (EngineError("teacher_down", "503", retryable=True), None, "teacher_down", True),
        (JobCancelled(JOB_ID), "cancel", "cancelled", False),
        (JobCancelled(JOB_ID), "shutdown", "worker_shutdown", True),
    ],
)
def test_final_report_codes(error: Exception, setup: str | None, code: str, retryable: bool) -> None:
    state = AttemptState(claimed=claimed())
    if setup == "cancel":
        state.request_cancel()
    elif setup == "shutdown":
        state.request_shutdown()
    reporter = JobReporter(FakeGateway(), state)
    reporter.usage("rows", 10)
    reporter.usage("rows", 5)
    report = final_report_for(state, reporter, error=error)
    assert isinstance(report, FailReport)
    assert (report.code, report.retryable, report.attempt) == (code, retryable, 2)
    assert [(u.kind, u.amount) for u in report.usage] == [("rows", 15.0)]


def test_a_lost_attempt_gets_no_final_report() -> None:
    state = AttemptState(claimed=claimed())
    state.mark_lost()
    assert final_report_for(state, JobReporter(FakeGateway(), state), result={"ok": 1}) is None


def test_json_result_converts_numpy_like_values_and_rejects_non_dicts() -> None:
    class Scalar:
        def tolist(self) -> float:
            return 0.5

    assert json_result({"score": Scalar(), "path": Path("/x")}) == {"score": 0.5, "path": "/x"}
    with pytest.raises(TypeError):
        json_result([1, 2])


def test_gpu_model_names() -> None:
    assert gpu_model("NVIDIA H100 80GB HBM3") == "H100"
    assert gpu_model("NVIDIA A100-SXM4-80GB") == "A100"
    assert gpu_model("Tesla T4") == "T4"


def _runtime(gateway: FakeGateway, tmp_path: Path, engine: Any) -> WorkerRuntime:
    # The claimed job's input exists and belongs to its tenant: the worker checks both.
    store = LocalArtifactStore(tmp_path / "store")
    if not store.exists("ds_" + "b" * 26):
        with store.begin("dataset", "ds_" + "b" * 26) as writer:
            (writer.path / "data.jsonl").write_text('{"text": "x"}\n')
            writer.commit(tenant_id=claimed().tenant_id)
    registered = WorkerRegistered(
        worker_id="wrk_" + "d" * 26,
        token="nexaw_x",
        lease_seconds=30,
        heartbeat_seconds=10,
        artifact_store={"kind": "local", "root": str(tmp_path / "store")},
        allowed_roots=[str(tmp_path)],
    )
    return WorkerRuntime(
        client=gateway,  # type: ignore[arg-type]
        registered=registered,
        workdir=tmp_path / "work",
        name="test-worker",
        load_engine=lambda job_type: engine,
        make_store=lambda cfg: LocalArtifactStore(Path(cfg["root"])),
    )


# A result that meets AuditResult's contract (the worker checks every result against its type's model).
AUDIT_RESULT: dict[str, Any] = {
    "dataset_id": "ds_" + "e" * 26,
    "overall_quality_score": 4.5,
    "quality_tier": "A-",
    "metrics": {"num_rows": 3},
    "scored_dataset_uri": f"internal://ds_{'e' * 26}/scored.parquet",
    "report_uri": f"internal://ds_{'e' * 26}/report.html",
    "report_json_uri": f"internal://ds_{'e' * 26}/report.json",
    "num_rows": 3,
    "mean_score": 4.5,
    "flag_counts": {},
    "exact_duplicates": 0,
    "near_duplicates": 0,
    "near_duplicate_clusters": 0,
}


def test_a_result_that_breaks_its_contract_fails_the_attempt(tmp_path: Path) -> None:
    gateway = FakeGateway()
    run_attempt(
        _runtime(gateway, tmp_path, lambda ctx, spec: {"num_rows": 3}), AttemptState(claimed=claimed())
    )
    assert gateway.completed == [] and len(gateway.failed) == 1
    failed = gateway.failed[0]
    assert failed.code == "result_invalid" and failed.retryable and "dataset_id" in failed.message


def test_run_attempt_completes_with_result_artifacts_usage_and_cleans_its_workdir(tmp_path: Path) -> None:
    gateway = FakeGateway()
    seen: dict[str, Any] = {}

    def engine(ctx: EngineContext, spec: Any) -> dict[str, Any]:
        seen["workdir"] = ctx.workdir
        assert ctx.workdir.is_dir()
        ctx.log("working")
        ctx.usage("rows", 3)
        ctx.produced_artifacts.append("ds_" + "e" * 26)
        ctx.progress(1.0, "done")
        return AUDIT_RESULT

    run_attempt(_runtime(gateway, tmp_path, engine), AttemptState(claimed=claimed()))
    assert len(gateway.completed) == 1 and gateway.failed == []
    report = gateway.completed[0]
    assert report.result == AUDIT_RESULT and report.attempt == 2
    assert report.artifacts == ["ds_" + "e" * 26]
    assert [(u.kind, u.amount) for u in report.usage] == [("rows", 3.0)]
    assert "working" in gateway.all_lines
    assert seen["workdir"].name == f"{JOB_ID}-2" and not seen["workdir"].exists()


def test_run_attempt_reports_a_crash_as_retryable_with_the_traceback_in_the_log(tmp_path: Path) -> None:
    gateway = FakeGateway()

    def engine(ctx: EngineContext, spec: Any) -> dict[str, Any]:
        raise KeyError("missing_column")

    run_attempt(_runtime(gateway, tmp_path, engine), AttemptState(claimed=claimed()))
    assert gateway.completed == []
    (report,) = gateway.failed
    assert report.code == "engine_crashed" and report.retryable
    assert "KeyError" in report.message and "missing_column" in report.message
    assert any(line.startswith("Traceback") for line in gateway.all_lines)
    assert any("raise KeyError" in line for line in gateway.all_lines)


def test_run_attempt_rejects_an_unreadable_spec_without_retry(tmp_path: Path) -> None:
    gateway = FakeGateway()
    run_attempt(
        _runtime(gateway, tmp_path, lambda ctx, spec: {}), AttemptState(claimed=claimed(spec={"nope": 1}))
    )
    (report,) = gateway.failed
    assert report.code == "invalid_spec" and not report.retryable


def test_run_attempt_that_loses_its_lease_reports_nothing_final(tmp_path: Path) -> None:
    gateway = FakeGateway()

    def engine(ctx: EngineContext, spec: Any) -> dict[str, Any]:
        gateway.raise_on["logs"] = StaleAttempt("stale_attempt")
        gateway.raise_on["progress"] = StaleAttempt("stale_attempt")
        ctx.log("about to be fenced")
        ctx.progress(0.5)
        for _ in range(200):
            if ctx.cancel_event.wait(0.05):
                break
        ctx.check_cancelled()
        return {"never": "sent"}

    run_attempt(_runtime(gateway, tmp_path, engine), AttemptState(claimed=claimed()))
    assert gateway.completed == [] and gateway.failed == []


# --- the HTTP client ---------------------------------------------------------------------


def _registered_body() -> dict[str, Any]:
    return {
        "worker_id": "wrk_" + "d" * 26,
        "token": "nexaw_token1",
        "lease_seconds": 30,
        "heartbeat_seconds": 10,
        "artifact_store": {"kind": "local", "root": "/tmp/a"},
    }


def _client(handler: Any) -> tuple[WorkerClient, list[float]]:
    sleeps: list[float] = []
    client = WorkerClient(
        "http://gw.test", "secret", transport=httpx.MockTransport(handler), sleep=sleeps.append
    )
    return client, sleeps


def _register(client: WorkerClient) -> None:
    client.register(WorkerRegister(name="w", job_types=[JobType.audit]), retry_for=5)


def test_client_retries_5xx_and_connect_errors_then_succeeds() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/register"):
            assert request.headers["Authorization"] == "Bearer secret"
            return httpx.Response(201, json=_registered_body())
        assert request.headers["Authorization"] == "Bearer nexaw_token1"
        if len(calls) == 2:
            raise httpx.ConnectError("refused")
        if len(calls) == 3:
            return httpx.Response(503, json={"error": {"type": "unavailable", "message": "restarting"}})
        return httpx.Response(204)

    client, sleeps = _client(handler)
    _register(client)
    client.logs(JOB_ID, 2, ["hello"], retry_for=60)
    assert len(calls) == 4 and len(sleeps) == 2


def test_client_never_retries_a_stale_attempt() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/register"):
            return httpx.Response(201, json=_registered_body())
        calls.append(request)
        return httpx.Response(
            409, json={"error": {"type": "stale_attempt", "message": "attempt 2 is not current"}}
        )

    client, sleeps = _client(handler)
    _register(client)
    with pytest.raises(StaleAttempt, match="attempt 2 is not current"):
        client.complete(JOB_ID, ResultReport(attempt=2, result={}))
    assert len(calls) == 1 and sleeps == []
    assert json.loads(calls[0].content)["attempt"] == 2


def test_client_gives_up_at_its_deadline() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/register"):
            return httpx.Response(201, json=_registered_body())
        raise httpx.ConnectError("refused")

    clock = Clock()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    client = WorkerClient(
        "http://gw.test", "s", transport=httpx.MockTransport(handler), sleep=sleep, clock=clock
    )
    _register(client)
    with pytest.raises(GatewayUnavailable):
        client.heartbeat(JOB_ID, 2, retry_for=20)
    assert 0 < sum(sleeps) <= 20


def test_client_registers_again_when_the_gateway_forgot_its_token() -> None:
    tokens = iter(["nexaw_token1", "nexaw_token2"])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/register"):
            return httpx.Response(201, json=_registered_body() | {"token": next(tokens)})
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer nexaw_token1":
            return httpx.Response(401, json={"error": {"type": "unauthorized", "message": "bad token"}})
        return httpx.Response(204)

    client, _ = _client(handler)
    _register(client)
    assert client.claim([JobType.audit], 0.0) is None
    assert seen == ["Bearer nexaw_token1", "Bearer nexaw_token2"] and client.generation == 2


def test_attempt_state_hands_out_the_final_report_once() -> None:
    state = AttemptState(claimed=claimed())
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(state.take_final_report())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


@pytest.mark.parametrize(
    "argv, secret",
    [
        (["--gateway", "http://g", "--secret", "-Xy_1"], "-Xy_1"),
        (["--gateway", "http://g", "--secret", "--double-dash"], "--double-dash"),
        (["--gateway", "http://g", "--secret=-eq"], "-eq"),
        (["--gateway", "http://g", "--secret", "plain", "--name", "w"], "plain"),
    ],
)
def test_a_secret_that_starts_with_a_dash_is_taken_as_the_secret(argv: list[str], secret: str) -> None:
    assert _parse_args(argv).secret == secret


def test_a_forgotten_secret_value_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse_args(["--gateway", "http://g", "--secret", "--name", "w"])
    assert exc.value.code == 2 and "--secret: expected one argument" in capsys.readouterr().err
