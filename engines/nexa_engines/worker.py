"""The pull worker: register, claim jobs, run their engines, report back.

Run it as ``python -m nexa_engines.worker --gateway URL`` (the secret comes from
``--secret`` or ``NEXA_WORKER_SECRET``) or from ``nexa worker``. One process runs up
to ``concurrency`` jobs at a time, each in its own thread with

* a ``JobReporter`` that buffers log lines and progress so the engine never waits
  on the network (logs flushed every ~0.5 s or 200 lines, progress at most once a
  second),
* a ``LeaseKeeper`` thread that heartbeats the job's lease and turns a user's
  cancel, or the gateway's 409 ``stale_attempt``, into ``ctx.cancel_event``.

A worker that lost its attempt (409) stops and reports nothing more. SIGTERM or
SIGINT stops claiming, lets running jobs finish for a grace period, then fails them
as retryable ``worker_shutdown`` so another worker picks them up; a second signal
skips the grace period. SIGKILL needs no cooperation: the lease runs out and the
gateway requeues the job with the next attempt.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from pydantic import ValidationError

from nexa.contracts import (
    ClaimedJob,
    ErrorCode,
    FailReport,
    HardwareProfile,
    HeartbeatAck,
    JobType,
    ResultReport,
    UsageRecord,
    WorkerRegister,
    WorkerRegistered,
    spec_for,
)
from nexa.contracts.refs import job_references
from nexa_engines.engine import EngineContext, EngineError, EngineFn, JobCancelled
from nexa_engines.host_resources import prefer_passive_waits, release_unused_memory
from nexa_engines.store.access import AccessDenied, check_reference, roots_within
from nexa_engines.store.signing import PlatformTrust
from nexa_engines.worker_client import (
    FINAL_REPORT_RETRY_SECONDS,
    REPORT_RETRY_SECONDS,
    GatewayUnavailable,
    StaleAttempt,
    WorkerClient,
    WorkerClientError,
    WorkerRejected,
)

log = logging.getLogger("nexa.worker")

MAX_LINES_PER_REQUEST = 10_000  # LogLines.lines limit
MAX_LINE_CHARS = 8192  # one log line; longer ones are cut, saying how much
MAX_BATCH_CHARS = 1 << 20  # per request: under the gateway's request body cap (NEXA_MAX_REQUEST_BYTES)
MAX_FAIL_MESSAGE = 20_000  # FailReport.message limit


class WorkerSetupError(Exception):
    """The worker cannot start (no engines, secret refused); the message says what to do."""


# --- hardware --------------------------------------------------------------------------


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1024**3)
    except (ValueError, OSError, AttributeError):
        return 1.0


_GPU_MODEL = re.compile(r"\b([A-Z]{1,3}\d{1,4}[A-Z]?)\b")


def _gpu_model(name: str) -> str:
    """Short model name ('H100') from nvidia-smi's long one ('NVIDIA H100 80GB HBM3')."""
    match = _GPU_MODEL.search(name)
    return (match.group(1) if match else name.strip())[:64]


def detect_gpus() -> list[str]:
    """Names of the NVIDIA GPUs nvidia-smi reports; empty without nvidia-smi or a driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def detect_hardware() -> HardwareProfile:
    """This machine's CPUs, memory and GPUs, as the gateway matches them against job resources."""
    gpus = detect_gpus()
    return HardwareProfile(
        cpu_count=max(1, min(4096, os.cpu_count() or 1)),
        memory_gb=max(0.01, round(_memory_gb(), 2)),
        gpus=min(64, len(gpus)),
        gpu_type=_gpu_model(gpus[0]) if gpus else None,
        tier="gpu" if gpus else "cpu",
    )


# --- per-attempt state ------------------------------------------------------------------


@dataclass
class AttemptState:
    """What happened to one attempt, shared by the engine thread, its helpers and the main loop."""

    claimed: ClaimedJob
    cancel_event: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    user_cancelled: bool = False
    shutting_down: bool = False
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
        self, job_id: str, attempt: int, fraction: float, message: str | None, *, retry_for: float = ...
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
            self._sink.progress(self.job_id, self.attempt, pending[0], pending[1], retry_for=retry_for)
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
    if ack.cancel_requested and not state.user_cancelled:
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


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def json_result(result: Any) -> dict[str, Any]:
    """The engine's result as plain JSON types (numpy scalars, paths and dates converted)."""
    if not isinstance(result, dict):
        raise TypeError(f"the engine returned {type(result).__name__}, not a dict")
    plain = json.loads(json.dumps(result, default=_jsonable, allow_nan=False))
    assert isinstance(plain, dict)
    return plain


def _summary(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= MAX_FAIL_MESSAGE - 100 else text[: MAX_FAIL_MESSAGE - 103] + "..."


def final_report_for(
    state: AttemptState,
    reporter: JobReporter,
    *,
    result: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> ResultReport | FailReport | None:
    """The one report that ends this attempt, or None when the attempt was lost."""
    attempt = state.claimed.attempt
    usage = reporter.usage_records()
    if state.lost:
        return None
    if error is None:
        assert result is not None
        return ResultReport(attempt=attempt, result=result, artifacts=[], usage=usage)
    if isinstance(error, JobCancelled):
        if state.user_cancelled or not state.shutting_down:
            return FailReport(
                attempt=attempt, code=ErrorCode.cancelled, message="cancelled by the user", usage=usage
            )
        return FailReport(
            attempt=attempt,
            code=ErrorCode.worker_shutdown,
            message="the worker was shut down while running this attempt",
            retryable=True,
            usage=usage,
        )
    if isinstance(error, EngineError):
        return FailReport(
            attempt=attempt,
            code=error.code[:100] or "engine_error",
            message=error.message[:MAX_FAIL_MESSAGE],
            retryable=error.retryable,
            usage=usage,
        )
    if isinstance(error, ValidationError):
        return FailReport(
            attempt=attempt,
            code=ErrorCode.invalid_spec,
            message=f"this worker cannot read the job's spec: {_summary(error)}",
            usage=usage,
        )
    return FailReport(
        attempt=attempt,
        code=ErrorCode.engine_crashed,
        message=f"{_summary(error)} (the traceback is in the job's log)",
        retryable=True,
        usage=usage,
    )


def send_final_report(
    client: WorkerClient, state: AttemptState, report: ResultReport | FailReport | None
) -> None:
    """Send the attempt's final report once; a 409 or a give-up is logged, never retried past its deadline."""
    if report is None or not state.take_final_report():
        return
    job_id = state.claimed.job_id
    try:
        if isinstance(report, ResultReport):
            client.complete(job_id, report, retry_for=FINAL_REPORT_RETRY_SECONDS)
            log.info("job %s attempt %d completed", job_id, report.attempt)
        else:
            client.fail(job_id, report, retry_for=FINAL_REPORT_RETRY_SECONDS)
            log.info("job %s attempt %d failed: %s: %s", job_id, report.attempt, report.code, report.message)
    except StaleAttempt:
        state.mark_lost()
    except WorkerClientError as exc:
        # The lease runs out and the gateway requeues the job: at-least-once, never lost.
        log.error("job %s: could not deliver the final report (%s)", job_id, exc)


def _load_engine(job_type: JobType) -> EngineFn:
    from nexa_engines.registry import load_engine

    return load_engine(job_type)


def _make_store(config: dict[str, Any]) -> Any:
    from nexa_engines.store.factory import store_from_config

    return store_from_config(config)


@dataclass
class WorkerRuntime:
    """What every attempt of this worker shares."""

    client: WorkerClient
    registered: WorkerRegistered
    workdir: Path
    name: str
    load_engine: Callable[[JobType], EngineFn] = _load_engine
    make_store: Callable[[dict[str, Any]], Any] = _make_store


def open_store(runtime: WorkerRuntime, claimed: ClaimedJob, job_dir: Path) -> Any:
    """The store this attempt writes to: through the gateway (scoped to the attempt) or direct."""
    config = runtime.registered.artifact_store
    if config.get("kind") == "gateway":
        from nexa_engines.store.gateway import GatewayArtifactStore

        return GatewayArtifactStore(runtime.client, claimed.job_id, claimed.attempt, job_dir / ".store")
    return runtime.make_store(config)


# Test hook: see JobReporter._hold. Never set in production.
HOLD_ENV = "NEXA_TEST_HOLD_UNTIL"


def run_attempt(runtime: WorkerRuntime, state: AttemptState) -> None:
    """Run one claimed attempt to its end and report it (unless the attempt was lost)."""
    claimed = state.claimed
    client = runtime.client
    reporter = JobReporter(client, state)
    job_dir = runtime.workdir / f"{claimed.job_id}-{claimed.attempt}"
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    ctx: EngineContext | None = None
    with job_helpers(client, state, reporter, float(runtime.registered.heartbeat_seconds)):
        try:
            reporter.log(
                f"[nexa worker] {runtime.name} ({runtime.registered.worker_id}) "
                f"on {socket.gethostname()} started {claimed.job_type.value} attempt {claimed.attempt}"
            )
            job_dir.mkdir(parents=True, exist_ok=True)
            engine = runtime.load_engine(claimed.job_type)
            spec = spec_for(claimed.job_type, claimed.spec)
            try:
                store = open_store(runtime, claimed, job_dir)
            except Exception as exc:
                raise EngineError(
                    ErrorCode.store_unavailable,
                    f"cannot open the artifact store: {_summary(exc)}",
                    retryable=True,
                ) from exc
            ctx = EngineContext(
                job_id=claimed.job_id,
                attempt=claimed.attempt,
                tenant_id=claimed.tenant_id,
                store=store,
                reporter=reporter,
                workdir=job_dir,
                # The tenant's grants, narrowed to the roots this worker was registered with.
                allowed_roots=roots_within(claimed.local_roots, runtime.registered.allowed_roots),
                s3_buckets=list(claimed.s3_buckets),
                scratch_roots=[runtime.workdir],
                endpoint_keys=dict(claimed.endpoint_keys),
                catalog=dict(claimed.catalog),
                trust=PlatformTrust(
                    tuple(k.lower() for k in runtime.registered.trusted_keys),
                    legacy_ids=frozenset(claimed.legacy_artifacts),
                )
                if runtime.registered.trusted_keys
                else None,
                cancel_event=state.cancel_event,
            )
            # The worker checks every reference again: a claim is not proof of access.
            for ref in job_references(spec):
                try:
                    check_reference(ctx.access, store, ref)
                except AccessDenied as exc:
                    raise EngineError(exc.code, f"{ref.field}: {exc.message}") from exc
            result = json_result(engine(ctx, spec))
        except Exception as exc:
            error = exc
            if not isinstance(exc, JobCancelled | EngineError | ValidationError):
                reporter.log(f"[nexa worker] the engine crashed: {_summary(exc)}")
                for block in traceback.format_exception(exc):
                    reporter.log(block.rstrip("\n"))
                log.error("job %s crashed", claimed.job_id, exc_info=exc)
        report = final_report_for(state, reporter, result=result, error=error)
        if isinstance(report, ResultReport) and ctx is not None:
            report.artifacts = list(dict.fromkeys(ctx.produced_artifacts))
        if isinstance(report, FailReport):
            reporter.log(f"[nexa worker] attempt {claimed.attempt} failed: {report.code}: {report.message}")
        reporter.pump(force=True, retry_for=FINAL_REPORT_RETRY_SECONDS)
    send_final_report(client, state, report)
    shutil.rmtree(job_dir, ignore_errors=True)
    del ctx, result, error
    # An idle worker should not hold the gigabytes its last attempt used.
    release_unused_memory(collect=True)


# --- the loop ------------------------------------------------------------------------


@contextmanager
def _signals_set(stop: threading.Event, abort: threading.Event, enabled: bool) -> Iterator[None]:
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal: failing running jobs now")
            abort.set()
            return
        log.info("signal %d: not claiming more jobs; finishing or handing back the running ones", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _register(
    client: WorkerClient, request: WorkerRegister, stop: threading.Event
) -> WorkerRegistered | None:
    while not stop.is_set():
        try:
            return client.register(request, retry_for=15.0)
        except GatewayUnavailable as exc:
            log.warning("gateway %s not reachable yet (%s); still trying", client.gateway_url, exc)
            stop.wait(2.0)
        except WorkerRejected as exc:
            if exc.status_code == 401:
                raise WorkerSetupError(
                    "the gateway refused the worker secret: pass the gateway's NEXA_WORKER_SECRET "
                    "with --secret or the NEXA_WORKER_SECRET environment variable"
                ) from exc
            raise WorkerSetupError(f"the gateway refused to register this worker: {exc}") from exc
    return None


def _shutdown(
    runtime: WorkerRuntime,
    active: dict[str, tuple[threading.Thread, AttemptState]],
    abort: threading.Event,
    grace: float,
) -> None:
    """Let running attempts finish within ``grace``, then hand them back as retryable."""
    deadline = time.monotonic() + grace
    while active and time.monotonic() < deadline and not abort.is_set():
        for key, (thread, _) in list(active.items()):
            thread.join(timeout=0.2)
            if not thread.is_alive():
                del active[key]
    for _, state in active.values():
        state.request_shutdown()
    # Engines that check ``ctx.check_cancelled`` stop within moments and report themselves.
    settle = time.monotonic() + 5.0
    for key, (thread, _) in list(active.items()):
        thread.join(timeout=max(0.0, settle - time.monotonic()))
        if not thread.is_alive():
            del active[key]
    for _, state in active.values():
        log.warning("job %s did not stop in time; handing it back", state.claimed.job_id)
        report = FailReport(
            attempt=state.claimed.attempt,
            code=ErrorCode.worker_shutdown,
            message="the worker was shut down while running this attempt",
            retryable=True,
        )
        send_final_report(runtime.client, state, report)


def _nexa_version() -> str | None:
    try:
        return importlib.metadata.version("nexa")[:64]
    except importlib.metadata.PackageNotFoundError:
        return None


def run_worker(
    gateway_url: str,
    worker_secret: str,
    *,
    name: str | None = None,
    concurrency: int = 1,
    job_types: list[JobType] | None = None,
    stop: threading.Event | None = None,
    workdir: Path | None = None,
    poll_wait: float = 5.0,
    shutdown_grace: float = 10.0,
    handle_signals: bool = True,
    transport: Any = None,
) -> None:
    """Register with the gateway and run claimed jobs until ``stop`` is set or a signal arrives."""
    if concurrency < 1:
        raise WorkerSetupError("concurrency must be at least 1")
    from nexa_engines.registry import installed_job_types

    if job_types is None:
        # Claim every type by default: a job whose engine is missing here then fails at once
        # with `engine_not_installed` instead of waiting in the queue for a worker that never comes.
        job_types = list(JobType)
    if not installed_job_types():
        raise WorkerSetupError(
            "no engine is installed on this machine, so this worker could run nothing: "
            "pip install 'nexa[engines]'"
        )
    stop = stop if stop is not None else threading.Event()
    abort = threading.Event()
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    own_workdir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="nexa-worker-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    # Serving processes this worker starts check callers' API keys with the same gateway.
    os.environ.setdefault("NEXA_GATEWAY_URL", gateway_url)
    client = WorkerClient(gateway_url, worker_secret, transport=transport)
    request = WorkerRegister(
        name=name[:200], hardware=detect_hardware(), job_types=list(job_types), version=_nexa_version()
    )
    try:
        with _signals_set(stop, abort, handle_signals):
            registered = _register(client, request, stop)
            if registered is None:
                return
            log.info(
                "worker %s ready: %s, %d slot(s), job types %s",
                name,
                gateway_url,
                concurrency,
                ", ".join(t.value for t in job_types),
            )
            runtime = WorkerRuntime(client=client, registered=registered, workdir=root, name=name)
            active: dict[str, tuple[threading.Thread, AttemptState]] = {}
            _claim_loop(runtime, active, job_types, concurrency, poll_wait, stop)
            _shutdown(runtime, active, abort, shutdown_grace)
    finally:
        client.close()
        if own_workdir:
            shutil.rmtree(root, ignore_errors=True)


def _claim_loop(
    runtime: WorkerRuntime,
    active: dict[str, tuple[threading.Thread, AttemptState]],
    job_types: list[JobType],
    concurrency: int,
    poll_wait: float,
    stop: threading.Event,
) -> None:
    client = runtime.client
    slot_freed = threading.Event()
    last_contact = time.monotonic()
    while not stop.is_set():
        for key, (thread, _) in list(active.items()):
            if not thread.is_alive():
                del active[key]
        if client.registered is not None and client.registered is not runtime.registered:
            runtime.registered = client.registered  # re-registered after the gateway forgot us
        if len(active) >= concurrency:
            slot_freed.wait(1.0)
            slot_freed.clear()
            if time.monotonic() - last_contact >= runtime.registered.heartbeat_seconds:
                try:
                    client.worker_heartbeat(retry_for=5.0)
                except WorkerClientError as exc:
                    log.warning("worker heartbeat failed (%s)", exc)
                last_contact = time.monotonic()
            continue
        try:
            claimed = client.claim(job_types, min(30.0, max(0.0, poll_wait)), retry_for=30.0)
        except GatewayUnavailable as exc:
            log.warning("gateway unreachable (%s); retrying", exc)
            stop.wait(2.0)
            continue
        except WorkerRejected as exc:
            log.error("claim refused (%s); retrying shortly", exc)
            stop.wait(5.0)
            continue
        last_contact = time.monotonic()
        if claimed is None:
            continue
        state = AttemptState(claimed=claimed)
        if stop.is_set():
            # Claimed while shutting down: hand it straight back.
            report = FailReport(
                attempt=claimed.attempt,
                code=ErrorCode.worker_shutdown,
                message="the worker was shutting down when it claimed this attempt",
                retryable=True,
            )
            send_final_report(client, state, report)
            break
        log.info("claimed job %s (%s) attempt %d", claimed.job_id, claimed.job_type.value, claimed.attempt)

        def body(state: AttemptState = state) -> None:
            try:
                run_attempt(runtime, state)
            finally:
                slot_freed.set()

        thread = threading.Thread(target=body, name=f"job-{claimed.job_id}", daemon=True)
        active[f"{claimed.job_id}-{claimed.attempt}"] = (thread, state)
        thread.start()


def _join_secret(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--secret VALUE`` as ``--secret=VALUE`` when VALUE starts with a dash.

    A generated secret (``secrets.token_urlsafe``) starts with "-" one time in 64, and
    argparse would take it for an option and refuse the command line. Only a value that
    is none of this parser's own options is joined, so a forgotten value still errors.
    """
    options = set(parser._option_string_actions)
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (
            arg == "--secret"
            and nxt is not None
            and nxt.startswith("-")
            and nxt.split("=", 1)[0] not in options
        ):
            out.append(f"--secret={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nexa_engines.worker",
        description="Run a Nexa pull worker against a gateway.",
        allow_abbrev=False,
    )
    parser.add_argument("--gateway", required=True, help="gateway URL, e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--secret",
        default=os.environ.get("NEXA_WORKER_SECRET"),
        help="the gateway's worker secret, or a node token (nexan_…) of the tenant that owns this machine "
        "(default: $NEXA_WORKER_SECRET)",
    )
    parser.add_argument("--name", default=None, help="worker name (default: hostname-pid)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs run at once")
    parser.add_argument(
        "--job-types", default=None, help="comma-separated job types (default: every installed engine)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory for jobs")
    parser.add_argument("--poll-wait", type=float, default=5.0, help="seconds one claim long-polls")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(_join_secret(parser, sys.argv[1:] if argv is None else list(argv)))


def quiet_http_logs() -> None:
    """Keep httpx's one-line-per-request INFO logs out of the worker log (failures are logged by us)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parse_args(argv)
    prefer_passive_waits()  # before anything imports torch
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_http_logs()
    if not args.secret:
        print("error: no worker secret: pass --secret or set NEXA_WORKER_SECRET", file=sys.stderr)
        return 2
    try:
        job_types = (
            [JobType(t.strip()) for t in args.job_types.split(",") if t.strip()] if args.job_types else None
        )
    except ValueError as exc:
        print(f"error: --job-types: {exc}; known: {', '.join(t.value for t in JobType)}", file=sys.stderr)
        return 2
    try:
        run_worker(
            args.gateway,
            args.secret,
            name=args.name,
            concurrency=args.concurrency,
            job_types=job_types,
            workdir=args.workdir,
            poll_wait=args.poll_wait,
        )
    except WorkerSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
