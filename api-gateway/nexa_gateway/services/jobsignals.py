"""Wake the log streams of a job when its lines or state change, instead of polling for it.

An open ``GET /v1/jobs/{id}/logs?follow=true`` waits on an event of this
process's bus; whoever changes the job (a worker's log batch, a report, a
cancel, the reaper) rings it after committing. With PostgreSQL the same change
also sends ``NOTIFY nexa_jobs, '<job id>'`` inside its transaction (delivered on
commit), and every replica's listener rings its own bus, so a stream on one
replica hears a worker that reported to another. A thousand idle streams then
cost no queries at all; a slow re-read (``log_poll_seconds``) remains as a
safety net for a missed signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger("nexa.gateway")

CHANNEL = "nexa_jobs"
# Subscribing to this key wakes on every change (the pipeline advancer waits on it).
ANY = "*"


class JobSignals:
    """Per-job wake-up events for the streams of this process; ``notify`` may be called from any thread."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``job_id`` changes, while the block runs (on the event loop)."""
        self._loop = self._loop or asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[job_id]

    def notify(self, job_ids: Iterable[str]) -> None:
        """Wake the streams of ``job_ids`` (thread-safe; nothing to do when none is open)."""
        loop = self._loop
        with self._lock:
            ids = list(job_ids)
            wanted = [job_id for job_id in ids if job_id in self._waiters]
            if ids and ANY in self._waiters:
                wanted.append(ANY)
        if not wanted or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake(wanted)
        else:
            loop.call_soon_threadsafe(self._wake, wanted)

    def _wake(self, job_ids: list[str]) -> None:
        with self._lock:
            events = [event for job_id in job_ids for event in self._waiters.get(job_id, ())]
        for event in events:
            event.set()

    def open_streams(self) -> int:
        with self._lock:
            return sum(len(events) for events in self._waiters.values())


def announce(session: Session, job_ids: Iterable[str]) -> None:
    """Tell every replica (PostgreSQL ``NOTIFY``, sent when the session commits); a no-op on SQLite."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for job_id in dict.fromkeys(job_ids):
        session.execute(text("SELECT pg_notify(:channel, :job_id)"), {"channel": CHANNEL, "job_id": job_id})


def _conninfo(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _notifications(database_url: str) -> AsyncIterator[str]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(_conninfo(database_url), autocommit=True) as conn:
        await conn.execute(f"LISTEN {CHANNEL}")
        log.info("listening for job changes of other replicas (%s)", CHANNEL)
        async for note in conn.notifies():
            yield note.payload


async def listen(database_url: str, signals: JobSignals, *, retry_seconds: float = 2.0) -> None:
    """Ring ``signals`` for every change another replica (or this one) commits; reconnects forever."""
    while True:
        try:
            async for job_id in _notifications(database_url):
                signals.notify([job_id])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database restarted: streams fall back to their slow re-read meanwhile
            log.warning("job change listener lost its connection (%s); reconnecting", _summary(exc))
        await asyncio.sleep(retry_seconds)


def _summary(exc: Any) -> str:
    # Never the connection string: only the error's class and first line.
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:200]}"
