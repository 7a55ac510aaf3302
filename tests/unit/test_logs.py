"""One log schema for every process: JSON lines with the job context, or the same as readable text."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from nexa import logs


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_job_context_and_the_traceback(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("worker", fmt="json", stream=out, force=True)
    log = logging.getLogger("nexa.worker")
    log.info("outside")
    with logs.log_context(job_id="job_1", attempt=2, pipeline_id="pl_1", unknown="dropped"):
        log.warning("inside %s", "a job")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "outside" and "job_id" not in first
    assert first["service"] == "worker" and first["logger"] == "nexa.worker" and first["ts"].endswith("Z")
    assert second == {
        **second,
        "level": "warning",
        "message": "inside a job",
        "job_id": "job_1",
        "attempt": 2,
    }
    assert second["pipeline_id"] == "pl_1" and "unknown" not in second
    assert "RuntimeError: boom" in third["exception"]


def test_text_is_the_default_and_names_the_job(restore_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.ENV_FORMAT, raising=False)
    out = io.StringIO()
    logs.configure("gateway", stream=out, force=True)
    with logs.log_context(job_id="job_1", attempt=1):
        logging.getLogger("nexa.gateway").info("claimed")
    line = out.getvalue().strip()
    assert line.endswith("INFO nexa.gateway [job_1 #1]: claimed")


def test_the_context_stays_with_its_thread(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("worker", fmt="json", stream=out, force=True)
    barrier = threading.Barrier(2)

    def attempt(job_id: str) -> None:
        with logs.log_context(job_id=job_id):
            barrier.wait(timeout=30)  # both contexts are set before either logs
            logging.getLogger("nexa.worker").info(job_id)

    threads = [threading.Thread(target=attempt, args=(j,)) for j in ("job_a", "job_b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted((r["message"], r["job_id"]) for r in lines) == [("job_a", "job_a"), ("job_b", "job_b")]


def test_an_unknown_format_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.ENV_FORMAT, "yaml")
    with pytest.raises(ValueError, match="NEXA_LOG_FORMAT='yaml'"):
        logs.log_format()


def test_a_root_logger_set_up_by_someone_else_is_left_alone(restore_root: None) -> None:
    root = logging.getLogger()
    theirs = logging.StreamHandler(io.StringIO())
    root.addHandler(theirs)
    assert logs.configure("worker", fmt="json", stream=io.StringIO()) is None
    assert theirs in root.handlers
    with pytest.raises(ValueError, match="NEXA_LOG_FORMAT"):
        logs.configure("worker", fmt="xml")  # a wrong format is refused all the same
