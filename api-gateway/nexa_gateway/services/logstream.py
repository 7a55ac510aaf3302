"""Server-Sent Events over a job's stored log lines.

Each line is one event whose id is its per-job sequence number, so a client
that reconnects with ``Last-Event-ID: N`` gets exactly the lines after N. The
stream reads the job's state *before* each batch of lines: when a terminal
state was read and no line follows, every line has been sent (workers cannot
write after the job ended: their writes are fenced), and ``event: end`` closes it.

Between reads a stream sleeps until the job changes (``jobsignals``): idle
streams cost no queries, and a new line reaches the client as soon as it is
committed. ``log_poll_seconds`` is only the safety re-read for a missed signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from nexa.contracts import TERMINAL_STATES
from nexa_gateway.db import Job, JobLog
from nexa_gateway.state import AppState

_BATCH = 500
_KEEPALIVE_SECONDS = 15.0


@dataclass
class _Batch:
    status: str
    lines: list[tuple[int, int, str, str]]  # seq, attempt, at, line


def _fetch(state: AppState, job_id: str, after: int) -> _Batch:
    with state.db.read() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id)) or "failed"
        rows = session.execute(
            select(JobLog.seq, JobLog.attempt, JobLog.at, JobLog.line)
            .where(JobLog.job_id == job_id, JobLog.seq > after)
            .order_by(JobLog.seq)
            .limit(_BATCH)
        ).all()
    return _Batch(status, [(int(s), int(a), at.isoformat(), line) for s, a, at, line in rows])


def format_event(seq: int, attempt: int, at: str, line: str) -> str:
    data = json.dumps({"seq": seq, "attempt": attempt, "at": at, "line": line}, ensure_ascii=False)
    return f"id: {seq}\nevent: log\ndata: {data}\n\n"


async def log_event_stream(
    state: AppState, request: Request, job_id: str, *, after: int, follow: bool
) -> AsyncIterator[str]:
    with state.signals.subscribe(job_id) as changed:
        async for chunk in _stream(state, request, job_id, changed, after=after, follow=follow):
            yield chunk


async def _stream(
    state: AppState, request: Request, job_id: str, changed: asyncio.Event, *, after: int, follow: bool
) -> AsyncIterator[str]:
    last = after
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        changed.clear()  # before reading: a change that lands during the read wakes the next wait
        batch = await run_in_threadpool(_fetch, state, job_id, last)
        if batch.lines:
            chunk = []
            for seq, attempt, at, line in batch.lines:
                chunk.append(format_event(seq, attempt, at, line))
                last = seq
            yield "".join(chunk)
            last_sent = time.monotonic()
            if len(batch.lines) == _BATCH:
                continue
        if batch.status in TERMINAL_STATES and len(batch.lines) < _BATCH:
            if not batch.lines:
                yield f"event: end\ndata: {json.dumps({'status': batch.status})}\n\n"
                return
            continue  # re-check once: the state we read may predate the lines we just sent
        if not follow:
            return
        if await request.is_disconnected():
            return
        # Sleep until the job changes; wake for a keep-alive, or for the slow safety re-read.
        while True:
            quiet = time.monotonic() - last_sent
            if quiet >= _KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
                quiet = 0.0
            timeout = min(_KEEPALIVE_SECONDS - quiet, state.settings.log_poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
                break
            if time.monotonic() - last_sent < _KEEPALIVE_SECONDS:
                break  # the safety re-read is due
