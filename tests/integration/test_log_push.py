"""Log streams are woken by changes, not by polling: on one gateway, and across replicas on PostgreSQL.

The safety re-read is set to ten minutes, so a line or an end that arrives
within the (generous) deadline can only have been pushed.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway_proc import GatewayFactory, GatewayProcess

pytestmark = pytest.mark.integration

NO_POLL = {"NEXA_LOG_POLL_SECONDS": "600"}
DEADLINE_S = 60.0


def _follow(gw: GatewayProcess, job_id: str, events: queue.Queue[tuple[str, Any]]) -> None:
    url = f"{gw.url}/v1/jobs/{job_id}/logs?follow=true"
    with httpx.stream("GET", url, headers=gw.headers(), timeout=httpx.Timeout(10, read=None)) as response:
        kind = "message"
        for line in response.iter_lines():
            if line.startswith("retry:"):
                events.put(("open", None))
            elif line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.put((kind, json.loads(line.split(":", 1)[1])))
                if kind == "end":
                    return


def _next(events: queue.Queue[tuple[str, Any]], kind: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            got, data = events.get(timeout=left)
        except queue.Empty:
            break
        if got == kind:
            return data
    pytest.fail(f"no {kind!r} event within {DEADLINE_S}s: the stream was not woken")


def test_lines_and_the_end_are_pushed_to_open_streams(
    gateway_factory: GatewayFactory, db_url: str, tmp_path: Path
) -> None:
    gw = gateway_factory(database_url=db_url, extra_env=NO_POLL)
    _scenario(gw, gw, tmp_path)


def test_a_stream_hears_what_another_replica_was_told(
    gateway_factory: GatewayFactory, postgres_url: str, tmp_path: Path
) -> None:
    # The stream is on one replica, the worker reports to the other: PostgreSQL NOTIFY carries it.
    watched = gateway_factory(database_url=postgres_url, extra_env=NO_POLL)
    reported = gateway_factory(database_url=postgres_url, extra_env=NO_POLL)
    _scenario(watched, reported, tmp_path)


def _scenario(watched: GatewayProcess, reported: GatewayProcess, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "one row"}\n')
    made = httpx.post(
        f"{watched.url}/v1/audit", json={"dataset_uri": str(data)}, headers=watched.headers(), timeout=10
    )
    assert made.status_code == 201, made.text
    job_id = made.json()["job_id"]
    worker = httpx.post(
        f"{reported.url}/v1/workers/register",
        json={"name": "by-hand"},
        headers={"Authorization": f"Bearer {reported.worker_secret}"},
        timeout=10,
    ).json()
    auth = {"Authorization": f"Bearer {worker['token']}"}
    claimed = httpx.post(f"{reported.url}/v1/workers/claim", json={}, headers=auth, timeout=10).json()
    assert claimed["job_id"] == job_id

    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    threading.Thread(target=_follow, args=(watched, job_id, events), daemon=True).start()
    _next(events, "open")
    time.sleep(0.5)  # the stream has read once and is waiting; the next line must wake it
    body = {"attempt": claimed["attempt"], "lines": ["hello from the worker"]}
    r = httpx.post(f"{reported.url}/v1/workers/jobs/{job_id}/logs", json=body, headers=auth, timeout=10)
    assert r.status_code == 204, r.text
    assert _next(events, "log")["line"] == "hello from the worker"

    fail = {"attempt": claimed["attempt"], "code": "engine_error", "message": "stop", "retryable": False}
    r = httpx.post(f"{reported.url}/v1/workers/jobs/{job_id}/fail", json=fail, headers=auth, timeout=10)
    assert r.status_code == 204, r.text
    assert _next(events, "end") == {"status": "failed"}
