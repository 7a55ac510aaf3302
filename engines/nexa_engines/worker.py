"""The pull worker: register, claim jobs, run their engines, report back.

Run it as ``python -m nexa_engines.worker --gateway URL`` (the secret comes from
``--secret`` or ``NEXA_WORKER_SECRET``) or from ``nexa worker``. One process runs up
to ``concurrency`` jobs at a time, each in its own thread (the attempt itself is
``nexa_engines.attempt``, shared with ``run_one``; its reporting is
``nexa_engines.reporting``; the profile it registers, ``nexa_engines.hardware``) with

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
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from nexa import logs
from nexa._core import DISTRIBUTION
from nexa.contracts import (
    ClaimedJob,
    ErrorCode,
    FailReport,
    HardwareProfile,
    JobType,
    ResultReport,
    WorkerRegister,
    WorkerRegistered,
    spec_for,
)
from nexa.contracts.pipelines import PIPELINE_LABEL
from nexa_engines.attempt import MAX_FAIL_MESSAGE, Failure, failure_of, run_engine, summary
from nexa_engines.engine import EngineContext, EngineError, EngineFn, JobCancelled
from nexa_engines.hardware import detect_hardware
from nexa_engines.host_resources import prefer_passive_waits, release_unused_memory
from nexa_engines.reporting import AttemptState, JobReporter, job_helpers
from nexa_engines.worker_client import (
    FINAL_REPORT_RETRY_SECONDS,
    GatewayUnavailable,
    StaleAttempt,
    WorkerClient,
    WorkerClientError,
    WorkerRejected,
)
from nexa_store.access import roots_within
from nexa_store.base import ArtifactError
from nexa_store.envelopes import KEY_FILE, NodeKey
from nexa_store.signing import PlatformTrust

log = logging.getLogger("nexa.worker")


class WorkerSetupError(Exception):
    """The worker cannot start (no engines, secret refused); the message says what to do."""


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
    failure = failure_of(error, stopped=state.shutting_down and not state.user_cancelled)
    if state.stop_code is not None and isinstance(error, JobCancelled):
        # The platform stopped it (its budget is reached): that is how it ended, not a cancel.
        failure = Failure(state.stop_code, state.stop_message[:MAX_FAIL_MESSAGE], False)
    return FailReport(
        attempt=attempt,
        code=failure.code,
        message=failure.message,
        retryable=failure.retryable,
        usage=usage,
    )


def manifest_digests(store: Any, artifact_ids: list[str]) -> dict[str, str]:
    """Each artifact's manifest digest as this node wrote it: the signed result names them, so the
    node's signature covers every file's hash (docs/mesh.md)."""
    from nexa_store.envelopes import manifest_digest

    found = {}
    for artifact_id in artifact_ids:
        try:
            found[artifact_id] = manifest_digest(store.read_manifest(artifact_id, verify=False))
        except Exception as exc:  # the gateway refuses the report without it: say why here
            log.error("artifact %s: cannot read its manifest to sign it: %s", artifact_id, exc)
    return found


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
    from nexa_store.factory import store_from_config

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
        from nexa_engines.gateway_store import GatewayArtifactStore

        return GatewayArtifactStore(runtime.client, claimed.job_id, claimed.attempt, job_dir / ".store")
    return runtime.make_store(config)


def run_attempt(runtime: WorkerRuntime, state: AttemptState) -> None:
    """Run one claimed attempt to its end and report it (unless the attempt was lost); every line
    logged meanwhile in this thread names the job, attempt and pipeline."""
    claimed = state.claimed
    labels = claimed.spec.get("labels") if isinstance(claimed.spec, dict) else None
    pipeline_id = labels.get(PIPELINE_LABEL) if isinstance(labels, dict) else None
    with logs.log_context(job_id=claimed.job_id, attempt=claimed.attempt, pipeline_id=pipeline_id):
        _run_attempt(runtime, state)


def _run_attempt(runtime: WorkerRuntime, state: AttemptState) -> None:
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
                    f"cannot open the artifact store: {summary(exc)}",
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
                endpoint_key_sha256=claimed.endpoint_key_sha256,
                catalog=dict(claimed.catalog),
                trust=PlatformTrust(
                    tuple(k.lower() for k in runtime.registered.trusted_keys),
                    legacy_ids=frozenset(claimed.legacy_artifacts),
                )
                if runtime.registered.trusted_keys
                else None,
                cancel_event=state.cancel_event,
                stop_reason=lambda: state.stop_code,
                pipeline_id=spec.labels.get(PIPELINE_LABEL),
            )
            # The worker checks every reference again: a claim is not proof of access.
            result = run_engine(engine, ctx, spec, claimed.job_type)
        except Exception as exc:
            error = exc
            if not isinstance(exc, JobCancelled | EngineError | ValidationError):
                reporter.log(f"[nexa worker] the engine crashed: {summary(exc)}")
                for block in traceback.format_exception(exc):
                    reporter.log(block.rstrip("\n"))
                log.error("job %s crashed", claimed.job_id, exc_info=exc)
        report = final_report_for(state, reporter, result=result, error=error)
        if report is not None and ctx is not None:
            # A failed attempt names what it committed too: the gateway keeps it when it stopped the job.
            report.artifacts = list(dict.fromkeys(ctx.produced_artifacts))[:1000]
            if isinstance(report, ResultReport):
                report.manifests = manifest_digests(ctx.store, report.artifacts)
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
        return importlib.metadata.version(DISTRIBUTION)[:64]
    except importlib.metadata.PackageNotFoundError:
        return None


def _node_key(directory: Path) -> NodeKey:
    """This node's Ed25519 identity, made at its first start in its state directory."""
    try:
        key = NodeKey.load_or_create(directory)
    except (ArtifactError, OSError) as exc:
        raise WorkerSetupError(f"the node key in {directory} cannot be used: {exc}") from exc
    log.info("node key %s… (%s)", key.public_hex[:16], directory / KEY_FILE)
    return key


def _with_throughput(hardware: HardwareProfile, state_dir: Path) -> HardwareProfile:
    """The profile with this machine's measured throughput (probed once per machine, then cached)."""
    from nexa_engines.probe import measured

    key = hardware.model_dump(mode="json", include={"cpu_model", "cpu_count", "gpus", "gpu_type"})
    key["memory_gb"] = round(hardware.memory_gb or 0)
    found = measured(state_dir, key)
    if found is None:
        return hardware
    return hardware.model_copy(
        update={
            "cpu_gflops": found.cpu_gflops,
            "memory_gbps": found.memory_gbps,
            "gpu_tflops": found.gpu_tflops,
        }
    )


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
    tier: str | None = None,
    state_dir: Path | None = None,
) -> None:
    """Register with the gateway and run claimed jobs until ``stop`` is set or a signal arrives."""
    if concurrency < 1:
        raise WorkerSetupError("concurrency must be at least 1")
    from nexa_engines.registry import claimable_job_types, installed_job_types

    if job_types is None:
        # Claim every type by default: a job whose engine is missing here then fails at once
        # with `engine_not_installed` instead of waiting in the queue for a worker that never comes;
        # but not a type that needs something this machine lacks (a container runtime).
        job_types = claimable_job_types()
    if not installed_job_types():
        raise WorkerSetupError(
            "no engine is installed on this machine, so this worker could run nothing: "
            "pip install 'nexa-forge[engines]'"
        )
    stop = stop if stop is not None else threading.Event()
    abort = threading.Event()
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    own_workdir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="nexa-worker-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    # Serving processes this worker starts check callers' API keys with the same gateway.
    os.environ.setdefault("NEXA_GATEWAY_URL", gateway_url)
    try:
        hardware = detect_hardware(root, tier)
    except ValidationError as exc:
        raise WorkerSetupError(f"--tier {tier!r} is not a tier name: {summary(exc)}") from exc
    from nexa.config import nexa_home

    state_dir = state_dir or nexa_home() / "worker"  # the node's key and its measured throughput
    node_key = _node_key(state_dir)
    hardware = _with_throughput(hardware, state_dir)
    client = WorkerClient(gateway_url, worker_secret, transport=transport)
    client.node_key = node_key
    request = WorkerRegister(
        name=name[:200],
        public_key=node_key.public_hex,
        hardware=hardware,
        job_types=list(job_types),
        version=_nexa_version(),
    )
    try:
        with _signals_set(stop, abort, handle_signals):
            registered = _register(client, request, stop)
            if registered is None:
                return
            from nexa_engines.benchmark_challenge import run_if_enabled

            run_if_enabled(client)  # the gateway measures this node's throughput; never fatal
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
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the node's Ed25519 key is kept (default: $NEXA_HOME/worker)",
    )
    parser.add_argument(
        "--tier",
        default=None,
        help="pin this node's tier (cpu, consumer-gpu, hpc; default: from its profile)",
    )
    parser.add_argument(
        "--no-benchmark",
        action="store_true",
        help="skip the throughput challenge at registration (the node then earns no credits; docs/mesh.md)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(_join_secret(parser, sys.argv[1:] if argv is None else list(argv)))


def quiet_http_logs() -> None:
    """Keep httpx's one-line-per-request INFO logs out of the worker log (failures are logged by us)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parse_args(argv)
    prefer_passive_waits()  # before anything imports torch
    try:
        logs.configure("worker", args.log_level.upper())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quiet_http_logs()
    if args.no_benchmark:
        from nexa_engines.benchmark_challenge import ENV_SWITCH

        os.environ[ENV_SWITCH] = "0"
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
            tier=args.tier,
            state_dir=args.state_dir,
        )
    except WorkerSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
