"""The audit engine end to end: real files, a real local artifact store, a real judge server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from nexa.contracts import AuditSpec, JudgeConfig
from nexa_engines.audit import engine as audit_engine
from nexa_engines.audit import run
from nexa_engines.audit.reader import MIN_BATCH_ROWS, DatasetReader
from nexa_engines.engine import EngineContext, EngineError, JobCancelled
from nexa_engines.sample_data import generate_sft_dataset
from nexa_store.local import LocalArtifactStore

ROWS = 600


class RecordingReporter:
    """Keeps every progress, log and usage call (the worker's role in production)."""

    def __init__(self, on_progress: Any = None) -> None:
        self.progress_calls: list[tuple[float, str | None]] = []
        self.lines: list[str] = []
        self.usage_calls: list[tuple[str, float]] = []
        self.on_progress = on_progress

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.progress_calls.append((fraction, message))
        if self.on_progress:
            self.on_progress(fraction, message)

    def log(self, line: str) -> None:
        self.lines.append(line)

    def usage(self, kind: str, amount: float) -> None:
        self.usage_calls.append((kind, amount))


def make_ctx(tmp_path: Path, reporter: RecordingReporter | None = None) -> EngineContext:
    return EngineContext(
        job_id="job_" + "a" * 26,
        attempt=1,
        tenant_id="tnt_" + "b" * 26,
        store=LocalArtifactStore(tmp_path / "store"),
        reporter=reporter or RecordingReporter(),
        workdir=tmp_path / "work",
        allowed_roots=[tmp_path / "data"],
    )


def read_scored(ctx: EngineContext, result: dict[str, Any]) -> pa.Table:
    # Results name artifacts, never server paths; the test reads the store directly.
    assert result["scored_dataset_uri"] == f"internal://{result['dataset_id']}/scored.parquet"
    assert isinstance(ctx.store, LocalArtifactStore)
    return pq.read_table(ctx.store.artifact_dir(result["dataset_id"]) / "scored.parquet")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_audit_finds_planted_problems(tmp_path: Path, fmt: str) -> None:
    source = tmp_path / "data" / f"sft.{fmt}"
    info = generate_sft_dataset(source, num_rows=ROWS, seed=3, fmt=fmt)
    reporter = RecordingReporter()
    ctx = make_ctx(tmp_path, reporter)

    result = run(ctx, AuditSpec(dataset_uri=str(source)))

    assert result["num_rows"] == ROWS
    assert ctx.produced_artifacts == [result["dataset_id"]]
    scored = read_scored(ctx, result)
    original = pq.read_table(source) if fmt == "parquet" else None
    assert scored.column_names == [*info["columns"], "nexa_score", "nexa_flags", "nexa_cluster"]
    assert scored.column("id").to_pylist() == list(range(ROWS))
    if original is not None:
        assert scored.select(info["columns"]).equals(original)
    assert scored.schema.field("nexa_score").type == pa.float64()
    assert scored.schema.field("nexa_cluster").type == pa.int64()
    assert scored.schema.field("nexa_flags").type == pa.list_(pa.string())

    flags = scored.column("nexa_flags").to_pylist()
    scores = scored.column("nexa_score").to_pylist()
    clusters = scored.column("nexa_cluster").to_pylist()
    for kind, rows in info["planted"].items():
        found = [r for r in rows if kind in flags[r]]
        assert found == rows, kind
    for copy, original_row in info["sources"].items():
        assert clusters[copy] == clusters[original_row]
        assert not any(f in flags[original_row] for f in ("exact_duplicate", "near_duplicate"))
        assert not ({"exact_duplicate", "near_duplicate"} <= set(flags[copy]))  # never both
    planted_rows = {r for rows in info["planted"].values() for r in rows}
    assert [i for i, f in enumerate(flags) if f and i not in planted_rows] == []
    assert all(0.0 <= s <= 5.0 for s in scores)
    assert all(scores[r] == 0.0 for r in info["planted"]["empty"])
    assert all(scores[i] == 5.0 for i in range(ROWS) if not flags[i])
    assert all(c == i for i, c in enumerate(clusters) if not flags[i] and i not in info["sources"].values())

    assert (
        result["exact_duplicates"]
        == result["flag_counts"]["exact_duplicate"]
        >= info["counts"]["exact_duplicate"]
    )
    assert result["near_duplicates"] >= info["counts"]["near_duplicate"]
    # Each planted near copy has its own source: as many clusters, and never more than the rows in them.
    assert info["counts"]["near_duplicate"] <= result["near_duplicate_clusters"] <= result["near_duplicates"]
    assert result["quality_tier"] in {"A+", "A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D"}
    # The SPEC's names (§8.1) beside Nexa's own.
    assert result["overall_quality_score"] == pytest.approx(result["mean_score"], abs=1e-3)
    assert result["metrics"]["num_rows"] == result["num_rows"]
    assert result["mean_score"] == pytest.approx(sum(scores) / ROWS, abs=1e-5)

    manifest = ctx.store.read_manifest(result["dataset_id"], verify=True)
    assert {f.path for f in manifest.files} == {"scored.parquet", "report.json", "report.md", "report.html"}
    assert manifest.inputs[0].uri == str(source) and manifest.inputs[0].sha256
    assert manifest.config["dataset_uri"] == str(source)
    assert manifest.metrics["quality_tier"] == result["quality_tier"]
    assert manifest.job_id == ctx.job_id and manifest.attempt == 1

    report = json.loads(ctx.store.read_file(result["dataset_id"], "report.json"))
    assert report["flag_counts"] == result["flag_counts"]
    assert sum(b["count"] for b in report["score_histogram"]) == ROWS
    html = ctx.store.read_file(result["dataset_id"], "report.html").decode()
    assert "<svg" in html and f"Quality tier {result['quality_tier']}" in html
    assert "@example.org" not in html  # PII is named, never copied into the report

    assert reporter.usage_calls == [("rows", ROWS)]
    fractions = [f for f, _ in reporter.progress_calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("text columns: instruction, response" in line for line in reporter.lines)


def test_messages_dataset(tmp_path: Path) -> None:
    rows = [
        [
            {"role": "user", "content": f"What is {i} plus {i + 1}?"},
            {"role": "assistant", "content": f"It is {2 * i + 1}."},
        ]
        for i in range(50)
    ]
    rows[30] = rows[10]
    rows[40] = [{"role": "user", "content": "Say something"}, {"role": "assistant", "content": ""}]
    source = tmp_path / "data" / "chat.parquet"
    source.parent.mkdir(parents=True)
    pq.write_table(pa.table({"messages": rows, "source": ["gen"] * 50}), source)
    ctx = make_ctx(tmp_path)

    result = run(ctx, AuditSpec(dataset_uri=str(source)))

    flags = read_scored(ctx, result).column("nexa_flags").to_pylist()
    assert flags[30] == ["exact_duplicate"]
    assert "empty" in flags[40]
    assert sum(1 for f in flags if f) == 2


def test_explicit_text_columns(tmp_path: Path) -> None:
    source = tmp_path / "data" / "custom.csv"
    source.parent.mkdir(parents=True)
    pacsv.write_csv(pa.table({"body": ["first note here", "", "first note here"], "n": [1, 2, 3]}), source)
    ctx = make_ctx(tmp_path)
    result = run(ctx, AuditSpec(dataset_uri=str(source), text_columns=["body"]))
    flags = read_scored(ctx, result).column("nexa_flags").to_pylist()
    assert flags == [[], ["empty"], ["exact_duplicate"]]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_small_batches_and_a_second_read_give_the_same_scored_copy(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "data" / f"sft.{fmt}"
    generate_sft_dataset(source, num_rows=ROWS, seed=5, fmt=fmt)
    whole = run(make_ctx(tmp_path), AuditSpec(dataset_uri=str(source)))

    # Batches of 128 rows, and an input "too large to keep": the scored copy is written
    # from a second read, batch by batch, and must not differ in any value.
    monkeypatch.setattr(audit_engine, "SCAN_BATCH_ROWS", 128)
    monkeypatch.setattr(audit_engine, "KEEP_INPUT_BYTES", 1)
    ctx = make_ctx(tmp_path)
    reread = run(ctx, AuditSpec(dataset_uri=str(source)))

    assert read_scored(ctx, reread).equals(read_scored(ctx, whole))
    for key in (
        "flag_counts",
        "exact_duplicates",
        "near_duplicates",
        "near_duplicate_clusters",
        "mean_score",
    ):
        assert reread[key] == whole[key], key


def test_reader_sizes_batches_by_bytes(tmp_path: Path) -> None:
    source = tmp_path / "wide.parquet"
    rows = 5000
    # Distinct rows: the size estimate reads the file's (encoded) metadata.
    pq.write_table(pa.table({"text": [f"{i:05d}" + "x" * 995 for i in range(rows)]}), source)
    by_rows = list(DatasetReader(source, "parquet", batch_size=4096).iter_batches())
    by_bytes = list(DatasetReader(source, "parquet", batch_size=4096, batch_bytes=200_000).iter_batches())
    assert [b.num_rows for b in by_rows] == [4096, rows - 4096]
    # ~1 KB rows and a 200 KB budget would give ~200 rows; the floor keeps batches useful.
    assert {b.num_rows for b in by_bytes[:-1]} == {MIN_BATCH_ROWS}
    assert pa.Table.from_batches(by_bytes).equals(pa.Table.from_batches(by_rows))


def test_no_text_column_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "data" / "numbers.parquet"
    source.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2], "label": ["a", "b"]}), source)
    ctx = make_ctx(tmp_path)
    with pytest.raises(EngineError) as err:
        run(ctx, AuditSpec(dataset_uri=str(source)))
    assert err.value.code == "no_text_columns"
    assert "x (int64)" in err.value.message and "text_columns" in err.value.message
    assert ctx.store.list_ids("dataset") == []


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    ctx = make_ctx(tmp_path)
    with pytest.raises(EngineError) as err:
        run(ctx, AuditSpec(dataset_uri=str(tmp_path / "data" / "absent.parquet")))
    assert err.value.code.startswith("dataset_")


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "data" / "broken.parquet"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"this is not parquet")
    with pytest.raises(EngineError) as err:
        run(make_ctx(tmp_path), AuditSpec(dataset_uri=str(source)))
    assert err.value.code == "dataset_unreadable"


def test_cancellation_stops_and_commits_nothing(tmp_path: Path) -> None:
    source = tmp_path / "data" / "sft.parquet"
    generate_sft_dataset(source, num_rows=300, seed=1)
    ctx_box: list[EngineContext] = []

    def cancel_after_scan(fraction: float, message: str | None) -> None:
        if message and message.startswith("scanned"):
            ctx_box[0].cancel_event.set()

    ctx = make_ctx(tmp_path, RecordingReporter(cancel_after_scan))
    ctx_box.append(ctx)
    with pytest.raises(JobCancelled):
        run(ctx, AuditSpec(dataset_uri=str(source)))
    assert ctx.store.list_ids("dataset") == []
    assert ctx.produced_artifacts == []
    assert not any((tmp_path / "store" / ".staging").iterdir())


def test_reauditing_a_scored_dataset_replaces_the_score_columns(tmp_path: Path) -> None:
    source = tmp_path / "data" / "sft.jsonl"
    generate_sft_dataset(source, num_rows=200, seed=2, fmt="jsonl")
    ctx = make_ctx(tmp_path)
    first = run(ctx, AuditSpec(dataset_uri=str(source)))
    second = run(ctx, AuditSpec(dataset_uri=first["dataset_id"]))
    scored = read_scored(ctx, second)
    assert scored.column_names.count("nexa_score") == 1
    assert scored.num_rows == 200
    assert ctx.store.read_manifest(second["dataset_id"]).inputs[0].artifact_id == first["dataset_id"]


class _JudgeHandler(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible judge: 5 for rows about Paris, 2 otherwise; the first call gets a 429."""

    calls = 0
    lock = threading.Lock()
    auth: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.lock:
            type(self).calls += 1
            first = type(self).calls == 1
            type(self).auth.append(self.headers.get("authorization", ""))
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            return
        if first:
            self.send_response(429)
            self.send_header("retry-after", "0")
            self.end_headers()
            return
        prompt = body["messages"][-1]["content"]
        answer = '{"score": 5}' if "Paris" in prompt else "Score: 2"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def judge_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # A loopback judge is refused by the default outbound policy; this test's operator allows it.
    monkeypatch.setenv("NEXA_OUTBOUND_ALLOWLIST", "127.0.0.1")
    # The operator lets these worker variables go to endpoints users name (the judge's URL).
    monkeypatch.setenv("NEXA_OUTBOUND_KEY_ENVS", "JUDGE_TEST_API_KEY,ABSENT_JUDGE_API_KEY")
    _JudgeHandler.calls = 0
    _JudgeHandler.auth = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_scores_sampled_rows(
    tmp_path: Path, judge_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUDGE_TEST_API_KEY", "secret-123")
    source = tmp_path / "data" / "qa.parquet"
    source.parent.mkdir(parents=True)
    questions = [
        "What is the capital of France?",
        "What is 2 plus 2?",
        "Name a prime number.",
        "Capital of Peru?",
    ]
    answers = ["Paris is the capital of France.", "2 plus 2 is 4.", "Seven is prime.", "Lima."]
    pq.write_table(pa.table({"question": questions, "answer": answers}), source)
    judge = JudgeConfig(
        base_url=judge_server, model="judge-1", api_key_env="JUDGE_TEST_API_KEY", sample_size=3
    )
    ctx = make_ctx(tmp_path)

    result = run(ctx, AuditSpec(dataset_uri=str(source), judge=judge))

    scored = read_scored(ctx, result)
    judge_scores = scored.column("nexa_judge_score").to_pylist()
    judged = [(i, s) for i, s in enumerate(judge_scores) if s is not None]
    assert len(judged) == 3
    for i, s in judged:
        assert s == (5.0 if i == 0 else 2.0)
        # heuristics give 5; the judge's 1-5 maps to 0-5 and counts for half
        assert scored.column("nexa_score")[i].as_py() == pytest.approx(0.5 * 5 + 0.5 * (s - 1) * 1.25)
    assert _JudgeHandler.calls == 4  # one 429 retried
    assert set(_JudgeHandler.auth) == {"Bearer secret-123"}
    report = json.loads(ctx.store.read_file(result["dataset_id"], "report.json"))
    assert report["judge"]["scored"] == 3 and report["judge"]["requests"] == 4


def test_judge_without_its_key_fails_clearly(
    tmp_path: Path, judge_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ABSENT_JUDGE_API_KEY", raising=False)
    source = tmp_path / "data" / "sft.parquet"
    generate_sft_dataset(source, num_rows=100, seed=0)
    judge = JudgeConfig(base_url=judge_server, model="m", api_key_env="ABSENT_JUDGE_API_KEY", sample_size=2)
    ctx = make_ctx(tmp_path)
    with pytest.raises(EngineError) as err:
        run(ctx, AuditSpec(dataset_uri=str(source), judge=judge))
    assert err.value.code == "judge_api_key_missing" and "ABSENT_JUDGE_API_KEY" in err.value.message
    assert ctx.store.list_ids("dataset") == []


def test_a_judge_on_a_non_public_address_is_refused_before_any_request(tmp_path: Path) -> None:
    source = tmp_path / "data" / "sft.parquet"
    generate_sft_dataset(source, num_rows=ROWS, seed=3, fmt="parquet")
    judge = JudgeConfig(base_url="http://169.254.169.254/v1", model="m", sample_size=2)
    with pytest.raises(EngineError) as info:
        run(make_ctx(tmp_path), AuditSpec(dataset_uri=str(source), judge=judge))
    assert info.value.code == "url_not_allowed"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_datasets_wider_than_the_column_cap_are_refused_before_arrow_reads_them(
    tmp_path: Path, fmt: str
) -> None:
    from nexa_store.datasets import MAX_DATASET_COLUMNS

    names = [f"c{i}" for i in range(MAX_DATASET_COLUMNS + 1)]
    path = tmp_path / f"wide.{fmt}"
    if fmt == "csv":
        path.write_text(",".join(names) + "\n" + ",".join("x" for _ in names) + "\n")
    elif fmt == "jsonl":
        path.write_text(json.dumps(dict.fromkeys(names, "x")) + "\n")
    else:
        pq.write_table(pa.table({n: ["x"] for n in names}), path)
    with pytest.raises(EngineError) as caught:
        list(DatasetReader(path, fmt).iter_batches())
    assert caught.value.code == "too_many_columns" and str(MAX_DATASET_COLUMNS) in caught.value.message
    narrow = tmp_path / f"narrow.{fmt}"
    if fmt == "csv":
        narrow.write_text(",".join(names[:-1]) + "\n" + ",".join("x" for _ in names[:-1]) + "\n")
    elif fmt == "jsonl":
        narrow.write_text(json.dumps(dict.fromkeys(names[:-1], "x")) + "\n")
    else:
        pq.write_table(pa.table({n: ["x"] for n in names[:-1]}), narrow)
    assert sum(b.num_rows for b in DatasetReader(narrow, fmt).iter_batches()) == 1


@pytest.mark.parametrize(
    ("mean", "flagged", "tier"),
    [
        (5.0, 0.0, "A+"),
        (4.8, 0.02, "A"),
        (4.55, 0.05, "A-"),
        (4.9, 0.06, "B+"),
        (4.25, 0.1, "B"),
        (4.0, 0.15, "B-"),
        (4.9, 0.16, "C+"),
        (3.4, 0.25, "C"),
        (3.0, 0.35, "C-"),
        (2.99, 0.0, "D"),
        (5.0, 0.36, "D"),
    ],
)
def test_graded_quality_tiers(mean: float, flagged: float, tier: str) -> None:
    from nexa_engines.audit.report import quality_tier

    assert quality_tier(mean, flagged) == tier
