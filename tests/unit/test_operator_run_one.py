"""The engine image's entry point: one attempt, exit codes the Job's podFailurePolicy acts on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

from nexa.contracts import AuditSpec
from nexa.contracts.nexajob import EXIT_FATAL, EXIT_SUCCESS, run_progress_key, run_result_key
from nexa_engines.run_one import StdoutReporter, run, write_run_record
from nexa_engines.sample_data import generate_sft_dataset
from nexa_operator.reconcile import termination_message
from nexa_operator.results import ResultReader

JOB = "job_" + "e" * 26


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        "NEXA_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "NEXA_WORKDIR": str(tmp_path / "work"),
        "NEXA_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "NEXA_ALLOWED_DATASET_ROOTS": str(tmp_path),
    }


def test_success_writes_the_record_the_operator_reads(tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    generate_sft_dataset(data, num_rows=200, fmt="jsonl")
    env = env_for(tmp_path)
    spec = AuditSpec(dataset_uri=str(data)).model_dump_json()
    assert run("audit", spec, JOB, 2, "tnt", env=env) == EXIT_SUCCESS
    record = json.loads((tmp_path / "artifacts" / run_result_key(JOB, 2)).read_text())
    assert record["attempt"] == 2 and record["result"]["num_rows"] == 200
    lookup = ResultReader({"NEXA_ARTIFACT_ROOT": str(tmp_path / "artifacts")}).read(JOB, 2)
    assert lookup.state == "found" and lookup.result == record["result"]
    assert ResultReader({"NEXA_ARTIFACT_ROOT": str(tmp_path / "artifacts")}).read(JOB, 1).state == "missing"
    # The attempt left its progress where the operator reads it while a job runs.
    progress = ResultReader({"NEXA_ARTIFACT_ROOT": str(tmp_path / "artifacts")}).read_progress(JOB, 2)
    assert progress is not None and 0.0 <= progress[0] <= 1.0
    message = (tmp_path / "termination-log").read_text()
    pod = {
        "status": {"containerStatuses": [{"name": "engine", "state": {"terminated": {"message": message}}}]}
    }
    assert termination_message(pod) == {
        "attempt": 2,
        "result": record["result"],
        "artifacts": record["artifacts"],
    }


def test_progress_is_published_at_most_once_per_interval(tmp_path: Path) -> None:
    published: list[dict[str, object]] = []
    clock = [100.0]
    reporter = StdoutReporter(lambda raw: published.append(json.loads(raw)), attempt=3, interval=5.0)
    with patch("nexa_engines.run_one.time.monotonic", lambda: clock[0]):
        reporter.progress(0.1, "first")
        clock[0] += 1.0
        reporter.progress(0.2, "too soon")
        clock[0] += 5.0
        reporter.progress(0.7, "later")
    assert published == [
        {"attempt": 3, "fraction": 0.1, "message": "first"},
        {"attempt": 3, "fraction": 0.7, "message": "later"},
    ]


def test_a_store_that_refuses_progress_does_not_fail_the_job(tmp_path: Path) -> None:
    def refuse(raw: bytes) -> None:
        raise OSError("store down")

    StdoutReporter(refuse, attempt=1, interval=0.0).progress(0.5, "half")  # no exception


def test_progress_records_of_another_attempt_or_garbage_are_ignored(tmp_path: Path) -> None:
    env = {"NEXA_ARTIFACT_ROOT": str(tmp_path)}
    reader = ResultReader(env)
    assert reader.read_progress(JOB, 1) is None
    write_run_record(env, run_progress_key(JOB, 1), b'{"attempt": 2, "fraction": 0.5}')
    assert reader.read_progress(JOB, 1) is None
    write_run_record(env, run_progress_key(JOB, 1), b"not json")
    assert reader.read_progress(JOB, 1) is None
    write_run_record(env, run_progress_key(JOB, 1), b'{"attempt": 1, "fraction": 7, "message": "m"}')
    assert reader.read_progress(JOB, 1) == (1.0, "m")


def test_a_dataset_that_does_not_exist_is_fatal(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    spec = AuditSpec(dataset_uri=str(tmp_path / "missing.jsonl")).model_dump_json()
    assert run("audit", spec, JOB, 1, "tnt", env=env) == EXIT_FATAL
    error = json.loads((tmp_path / "termination-log").read_text())["error"]
    assert error["retryable"] is False and "missing.jsonl" in error["message"]
    assert not (tmp_path / "artifacts" / run_result_key(JOB, 1)).exists()


def test_an_invalid_spec_is_fatal_from_the_command_line(tmp_path: Path) -> None:
    env = {**env_for(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nexa_engines.run_one",
            "--job-type",
            "audit",
            "--job-id",
            JOB,
            "--attempt",
            "1",
            "--spec-json",
            '{"ngram": 0}',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_FATAL, proc.stderr
    assert "invalid_spec" in proc.stderr
