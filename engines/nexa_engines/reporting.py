"""One attempt's reporting: its state, the buffered reporter of logs, progress and usage, and the lease.

The engine never waits on the network: a ``JobReporter`` buffers log lines and
progress (logs flushed every ~0.5 s or 200 lines, progress at most once a second),
and helper threads heartbeat the lease, turning a user's cancel or the gateway's
409 ``stale_attempt`` into the attempt's ``cancel_event``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nexa.contracts import ClaimedJob, HeartbeatAck, UsageRecord
from nexa_engines.worker_client import (
    REPORT_RETRY_SECONDS,
    GatewayUnavailable,
    StaleAttempt,
    WorkerClient,
    WorkerClientError,
)

log = logging.getLogger("nexa.worker")

MAX_LINES_PER_REQUEST = 10_000  # LogLines.lines limit
MAX_LINE_CHARS = 8192  # one log line; longer ones are cut, saying how much
MAX_BATCH_CHARS = 1 << 20  # per request: under the gateway's request body cap (NEXA_MAX_REQUEST_BYTES)

# Test hook: see JobReporter._hold. Never set in production.
HOLD_ENV = "NEXA_TEST_HOLD_UNTIL"


@dataclass
class AttemptState:
    """What happened to one attempt, shared by the engine thread, its helpers and the main loop."""

    claimed: ClaimedJob
    cancel_event: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    user_cancelled: bool = False
    shutting_down: bool = False
    # Set when the platform stops the attempt (budget_exceeded): the attempt ends with this code.
    stop_code: str | None = None
    stop_message: str = ""
    _reported: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mark_lost(self) -> None:
        """The gateway fenced this attempt off: stop the engine and never report again."""
        with self._lock:
            if not self.lost and not self._reported:
                log.warning(
                    "job %s attempt %d: the gateway gave the job to another attempt; stopping",
                    self.claimed.job_id,
                    self.claimed.attempt,
                )
            self.lost = True
        self.cancel_event.set()

    def request_cancel(self) -> None:
        """The user cancelled the job."""
        with self._lock:
            self.user_cancelled = True
        self.cancel_event.set()

    def request_stop(self, code: str, message: str) -> None:
        """The platform stops the attempt (its budget is reached): the engine stops at its next check."""
        with self._lock:
            self.stop_code, self.stop_message = code, message
        self.cancel_event.set()

    def request_shutdown(self) -> None:
        """The worker is stopping: the engine should stop at its next check."""
        with self._lock:
            self.shutting_down = True
        self.cancel_event.set()

    def take_final_report(self) -> bool:
        """True exactly once, unless the attempt is lost: the caller sends the final report."""
        with self._lock:
            if self._reported or self.lost:
                return False
            self._reported = True
            return True


class JobReportSink(Protocol):
    """The part of ``WorkerClient`` a reporter needs (a fake in tests)."""

    def logs(self, job_id: str, attempt: int, lines: list[str], *, retry_for: float = ...) -> None: ...

    def progress(
        self,
        job_id: str,
        attempt: int,
        fraction: float,
        message: str | None,
        *,
        retry_for: float = ...,
        usage: list[UsageRecord] | None = ...,
    ) -> None: ...


class JobReporter:
    """An engine's ``Reporter``: buffers logs and progress; ``pump`` sends them in batches.

    The engine thread only appends to buffers; sending happens in ``pump`` (called by
    a pump thread and once, forced, at the end). A batch goes out when 200 lines are
    waiting or 0.5 s passed since the last one; progress goes out at most once per
    ``progress_interval`` and always carries the latest value. While the gateway is
    unreachable lines stay buffered (up to ``max_buffered``, oldest dropped with a
    note). A 409 marks the attempt lost and everything buffered is discarded.
    """

    def __init__(
        self,
        sink: JobReportSink,
        state: AttemptState,
        *,
        flush_interval: float = 0.5,
        max_batch: int = 200,
        progress_interval: float = 1.0,
        max_buffered: int = 100_000,
        retry_for: float = REPORT_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._state = state
        self._held = False
        self.job_id = state.claimed.job_id
        self.attempt = state.claimed.attempt
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.progress_interval = progress_interval
        self.max_buffered = max_buffered
        self.retry_for = retry_for
        self._clock = clock
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._lines: list[str] = []
        self._dropped = 0
        self._pending_progress: tuple[float, str | None] | None = None
        self._last_flush = clock()
        self._last_progress = -math.inf
        self._usage: dict[str, float] = {}
        self.wake = threading.Event()  # set when a full batch is waiting

    # Reporter protocol (called from the engine thread) ------------------------------

    def log(self, line: str) -> None:
        """Buffer one line (multi-line strings become several lines)."""
        parts = [
            p
            if len(p) <= MAX_LINE_CHARS
            else p[: MAX_LINE_CHARS - 30] + f" … [{len(p) - MAX_LINE_CHARS + 30} chars cut]"
            for p in str(line).splitlines() or [""]
        ]
        with self._lock:
            self._lines.extend(parts)
            excess = len(self._lines) - self.max_buffered
            if excess > 0:
                del self._lines[:excess]
                self._dropped += excess
            full = len(self._lines) >= self.max_batch
        if full:
            self.wake.set()

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Remember the latest progress; it is sent on the next due pump."""
        with self._lock:
            self._pending_progress = (min(1.0, max(0.0, float(fraction))), message)
        if fraction > 0 and not self._held and os.environ.get(HOLD_ENV):
            self._hold(Path(os.environ[HOLD_ENV]))

    def _hold(self, release: Path) -> None:
        # Test hook (a barrier for fault tests): the first progress is sent, then the engine
        # waits here until the file ``release`` exists, so a test can kill or freeze this
        # worker mid-attempt without hoping the work is slow. Heartbeats go on meanwhile.
        self._held = True
        self.pump(force=True)
        while not release.exists() and not self._state.cancel_event.is_set():
            time.sleep(0.05)

    def usage(self, kind: str, amount: float) -> None:
        """Add to the attempt's usage totals (reported with the final result)."""
        with self._lock:
            self._usage[kind] = self._usage.get(kind, 0.0) + float(amount)

    # -------------------------------------------------------------------------------

    def usage_records(self) -> list[UsageRecord]:
        """Usage totals so far, one record per kind."""
        with self._lock:
            return [UsageRecord(kind=k, amount=max(0.0, v)) for k, v in sorted(self._usage.items())]

    def buffered_lines(self) -> int:
        """How many log lines wait to be sent."""
        with self._lock:
            return len(self._lines)

    def pump(self, *, force: bool = False, retry_for: float | None = None) -> None:
        """Send what is due (everything when ``force``); never raises for network trouble."""
        with self._send_lock:
            if self._state.lost:
                self._discard()
                return
            retry = self.retry_for if retry_for is None else retry_for
            while self._send_log_batch(force, retry):
                pass
            if not self._state.lost:
                self._send_progress(force, retry)

    def _discard(self) -> None:
        with self._lock:
            self._lines.clear()
            self._pending_progress = None

    def _take_batch(self, force: bool) -> list[str] | None:
        now = self._clock()
        with self._lock:
            if not self._lines and not self._dropped:
                return None
            due = force or len(self._lines) >= self.max_batch or now - self._last_flush >= self.flush_interval
            if not due:
                return None
            batch: list[str] = []
            if self._dropped:
                batch.append(
                    f"[nexa worker] {self._dropped} earlier log lines were dropped "
                    "while the gateway was unreachable"
                )
                self._dropped = 0
            # Bounded in lines and in bytes: a batch stays well under the gateway's body cap.
            size, take = 0, 0
            limit = MAX_LINES_PER_REQUEST - len(batch)
            while take < min(limit, len(self._lines)) and size < MAX_BATCH_CHARS:
                size += len(self._lines[take]) + 8
                take += 1
            batch.extend(self._lines[:take])
            del self._lines[:take]
            self._last_flush = now
            return batch

    def _send_log_batch(self, force: bool, retry_for: float) -> bool:
        """Send one batch; True when another batch should follow right away."""
        batch = self._take_batch(force)
        if batch is None:
            return False
        try:
            self._sink.logs(self.job_id, self.attempt, batch, retry_for=retry_for)
        except StaleAttempt:
            self._state.mark_lost()
            self._discard()
            return False
        except GatewayUnavailable as exc:
            log.warning("job %s: could not send %d log lines yet (%s)", self.job_id, len(batch), exc)
            with self._lock:
                self._lines[:0] = batch  # keep them, in order, for the next pump
            return False
        except WorkerClientError as exc:
            # The gateway refuses this batch for good; keep the lines in the worker's own log.
            log.error("job %s: gateway refused %d log lines (%s):", self.job_id, len(batch), exc)
            for line in batch:
                log.error("job %s | %s", self.job_id, line)
            return False
        with self._lock:
            return bool(self._lines) and (force or len(self._lines) >= self.max_batch)

    def _send_progress(self, force: bool, retry_for: float) -> None:
        now = self._clock()
        with self._lock:
            pending = self._pending_progress
            if pending is None or (not force and now - self._last_progress < self.progress_interval):
                return
            self._last_progress = now
        try:
            # The usage so far rides along: the gateway stops an attempt that reaches its budget.
            self._sink.progress(
                self.job_id,
                self.attempt,
                pending[0],
                pending[1],
                retry_for=retry_for,
                usage=self.usage_records(),
            )
        except StaleAttempt:
            self._state.mark_lost()
            self._discard()
            return
        except WorkerClientError as exc:
            log.warning("job %s: could not report progress (%s)", self.job_id, exc)
            return
        with self._lock:
            if self._pending_progress == pending:
                self._pending_progress = None


class LeaseSink(Protocol):
    """The part of ``WorkerClient`` the lease keeper needs (a fake in tests)."""

    def heartbeat(self, job_id: str, attempt: int, *, retry_for: float = ...) -> HeartbeatAck: ...


def heartbeat_once(sink: LeaseSink, state: AttemptState, retry_for: float) -> None:
    """Extend the lease once; a user's cancel or a 409 sets the attempt's cancel event."""
    try:
        ack = sink.heartbeat(state.claimed.job_id, state.claimed.attempt, retry_for=retry_for)
    except StaleAttempt:
        state.mark_lost()
        return
    except WorkerClientError as exc:
        # The lease may still be alive; the next beat tries again. If it ran out, the
        # gateway requeues the job and our next report gets 409.
        log.warning("job %s: heartbeat failed (%s)", state.claimed.job_id, exc)
        return
    if ack.cancel_requested and ack.stop_code and state.stop_code is None:
        log.info("job %s: stopped by the platform: %s", state.claimed.job_id, ack.stop_message)
        state.request_stop(ack.stop_code, ack.stop_message or ack.stop_code)
    elif ack.cancel_requested and not ack.stop_code and not state.user_cancelled:
        log.info("job %s: cancelled by the user", state.claimed.job_id)
        state.request_cancel()


def _every(
    interval: float, stop: threading.Event, action: Callable[[], None], wake: threading.Event | None = None
) -> None:
    while True:
        if wake is not None:
            if wake.wait(interval):
                wake.clear()
        elif stop.wait(interval):
            return
        if stop.is_set():
            return
        action()


@contextmanager
def job_helpers(
    client: WorkerClient, state: AttemptState, reporter: JobReporter, heartbeat_seconds: float
) -> Iterator[None]:
    """Run the pump and lease-keeper threads for the duration of the block."""
    stop = threading.Event()
    beat_every = max(0.5, heartbeat_seconds)
    threads = [
        threading.Thread(
            target=_every,
            args=(beat_every, stop, lambda: heartbeat_once(client, state, retry_for=beat_every)),
            name=f"lease-{state.claimed.job_id}",
            daemon=True,
        ),
        threading.Thread(
            target=_every,
            args=(
                min(reporter.flush_interval, reporter.progress_interval) / 2,
                stop,
                reporter.pump,
                reporter.wake,
            ),
            name=f"pump-{state.claimed.job_id}",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        reporter.wake.set()
        for thread in threads:
            thread.join(timeout=1.0)


# --- running one attempt ----------------------------------------------------------------
