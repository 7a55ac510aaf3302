"""Run one engine for one NexaJob attempt, without a worker: the entry point of the engine image.

    python -m nexa_engines.run_one --job-type audit --job-id job_… --attempt 1 --spec-json '{…}'

The operator starts this in a Kubernetes Job. Logs and progress go to stdout
(``kubectl logs``); the artifact store comes from the environment
(``store_from_env``), or, with ``NEXA_STORE_ACCESS=gateway``, is the gateway's
store seen through this attempt's token (``NEXA_ATTEMPT_TOKEN``): then the pod
holds no storage credentials and writes its run records through the gateway too.
On success the result is written as a record to
``runs/<job_id>/attempt-<n>/result.json`` in the artifact store and, when it
fits, to the termination message (``/dev/termination-log``), where the operator
reads it back. Exit codes:

* 0 — success;
* 3 — a failure another attempt cannot fix (a non-retryable ``EngineError``, an
  invalid spec, an engine that is not installed): the Job fails at once;
* 1 — anything else (retryable ``EngineError``, a crash, SIGTERM): the operator
  starts another attempt while retries remain.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from nexa.attempttokens import ATTEMPT_TOKEN_ENV
from nexa.contracts import ErrorCode, JobType, spec_for
from nexa.contracts.catalog import CATALOG_SETTING, CatalogError, parse_catalog
from nexa.contracts.nexajob import (
    EXIT_FATAL,
    EXIT_RETRYABLE,
    EXIT_SUCCESS,
    TERMINATION_MESSAGE_LIMIT,
    run_progress_key,
    run_result_key,
)
from nexa.contracts.pipelines import PIPELINE_LABEL
from nexa.storesettings import S3Location
from nexa_engines.attempt import failure_of, run_engine
from nexa_engines.engine import EngineContext, EngineError, JobCancelled
from nexa_engines.host_resources import prefer_passive_waits
from nexa_engines.worker_client import AttemptClient
from nexa_store.base import ArtifactStore
from nexa_store.factory import default_local_root, store_from_env

DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class StdoutReporter:
    """An engine ``Reporter`` that prints log lines, progress and usage to stdout.

    With ``publish``, progress is also handed on (as a JSON record) at most once per
    ``interval`` seconds: the operator copies the latest record into the NexaJob's status.
    """

    def __init__(
        self,
        publish: Callable[[bytes], None] | None = None,
        *,
        attempt: int = 0,
        interval: float = 5.0,
    ) -> None:
        self.usage_totals: dict[str, float] = {}
        self._lock = threading.Lock()
        self._publish = publish
        self._attempt = attempt
        self._interval = interval
        self._last_published = float("-inf")

    def log(self, line: str) -> None:
        with self._lock:
            for part in str(line).splitlines() or [""]:
                print(part, flush=True)

    def progress(self, fraction: float, message: str | None = None) -> None:
        with self._lock:
            print(f"[nexa progress] {fraction:.4f} {message or ''}".rstrip(), flush=True)
            now = time.monotonic()
            if self._publish is None or now - self._last_published < self._interval:
                return
            self._last_published = now
        record = {"attempt": self._attempt, "fraction": round(float(fraction), 4), "message": message}
        try:
            self._publish(json.dumps(record, separators=(",", ":")).encode())
        except Exception as exc:  # progress is best effort: the job goes on without it
            print(f"[nexa] could not publish progress: {exc}", file=sys.stderr, flush=True)

    def usage(self, kind: str, amount: float) -> None:
        with self._lock:
            self.usage_totals[kind] = self.usage_totals.get(kind, 0.0) + float(amount)


def result_record(
    job_id: str, attempt: int, result: dict[str, Any], artifacts: list[str], usage: dict[str, float]
) -> bytes:
    """The JSON record the operator reads back for a successful attempt."""
    doc = {"job_id": job_id, "attempt": attempt, "result": result, "artifacts": artifacts, "usage": usage}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_run_record(env: Mapping[str, str], key: str, record: bytes) -> str:
    """Store ``record`` at ``key`` under the artifact store root the environment names; returns its location."""
    location = S3Location.from_env(env)
    if location is not None:
        from io import BytesIO

        name = location.object_name(key)
        location.client().put_object(
            location.bucket, name, BytesIO(record), len(record), content_type="application/json"
        )
        return f"s3://{location.bucket}/{name}"
    path = default_local_root(env) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(record)
    os.replace(tmp, path)  # readers never see half a record
    return str(path)


def write_result_record(env: Mapping[str, str], job_id: str, attempt: int, record: bytes) -> str:
    """Store an attempt's result record where the operator looks for it."""
    return write_run_record(env, run_result_key(job_id, attempt), record)


def attempt_client(env: Mapping[str, str]) -> AttemptClient | None:
    """The gateway client of a pod told to reach the store through the gateway (``NEXA_STORE_ACCESS=gateway``)."""
    if env.get("NEXA_STORE_ACCESS") != "gateway":
        return None
    url, token = env.get("NEXA_GATEWAY_URL"), env.get(ATTEMPT_TOKEN_ENV)
    if not url or not token:
        raise ValueError(f"NEXA_STORE_ACCESS=gateway needs NEXA_GATEWAY_URL and {ATTEMPT_TOKEN_ENV}")
    return AttemptClient(url, token)


def write_termination_message(env: Mapping[str, str], doc: dict[str, Any]) -> None:
    """Leave ``doc`` for the kubelet to copy into the pod's status (dropped when it does not fit)."""
    path = Path(env.get("NEXA_TERMINATION_LOG", DEFAULT_TERMINATION_LOG))
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        if "error" in doc:
            error = dict(doc["error"])
            error["message"] = str(error.get("message", ""))[: TERMINATION_MESSAGE_LIMIT // 2]
            text = json.dumps({"attempt": doc.get("attempt"), "error": error}, separators=(",", ":"))
        else:
            text = json.dumps({"attempt": doc.get("attempt"), "result_in_store": True})
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        pass  # outside a pod there is no termination log; stdout has everything


def _progress_interval(env: Mapping[str, str]) -> float:
    """Seconds between progress records (``NEXA_PROGRESS_INTERVAL_SECONDS``, default 5)."""
    try:
        return max(0.0, float(env.get("NEXA_PROGRESS_INTERVAL_SECONDS") or 5.0))
    except ValueError:
        return 5.0


def _fail(env: Mapping[str, str], attempt: int, code: str, message: str, *, retryable: bool) -> int:
    print(f"[nexa] attempt {attempt} failed: {code}: {message}", file=sys.stderr, flush=True)
    write_termination_message(
        env, {"attempt": attempt, "error": {"code": code, "message": message, "retryable": retryable}}
    )
    return EXIT_RETRYABLE if retryable else EXIT_FATAL


def run(
    job_type: str,
    spec_json: str,
    job_id: str,
    attempt: int,
    tenant_id: str,
    env: Mapping[str, str] | None = None,
    cancel_event: threading.Event | None = None,
) -> int:
    """Run the attempt and return the process exit code (0, 1 or 3; see the module docstring)."""
    from nexa_engines.registry import load_engine

    env = os.environ if env is None else env
    progress_key = run_progress_key(job_id, attempt)
    # A pod of the gateway's tenant namespaces holds an attempt token instead of storage keys.
    try:
        client = attempt_client(env)
    except ValueError as exc:
        return _fail(env, attempt, ErrorCode.store_unavailable, str(exc), retryable=False)

    def publish_progress(record: bytes) -> None:
        if client is not None:
            client.put_run_record(job_id, attempt, "progress.json", record, retry_for=0)
        else:
            write_run_record(env, progress_key, record)

    reporter = StdoutReporter(publish_progress, attempt=attempt, interval=_progress_interval(env))
    try:
        spec = spec_for(JobType(job_type), json.loads(spec_json))
    except (ValueError, ValidationError) as exc:
        return _fail(
            env, attempt, ErrorCode.invalid_spec, f"the job's spec is invalid: {exc}", retryable=False
        )
    try:
        catalog = parse_catalog(env.get(CATALOG_SETTING))
    except CatalogError as exc:
        return _fail(env, attempt, ErrorCode.invalid_catalog, str(exc), retryable=False)
    workdir = Path(env.get("NEXA_WORKDIR") or tempfile.gettempdir()) / f"{job_id}-{attempt}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        engine = load_engine(job_type)
        if client is not None:
            from nexa_engines.gateway_store import GatewayArtifactStore

            store: ArtifactStore = GatewayArtifactStore(client, job_id, attempt, workdir / ".store")
        else:
            store = store_from_env(env)
    except EngineError as exc:
        return _fail(env, attempt, exc.code, exc.message, retryable=exc.retryable)
    except Exception as exc:  # the store could not be opened: configuration or network
        return _fail(
            env,
            attempt,
            ErrorCode.store_unavailable,
            f"cannot open the artifact store: {exc}",
            retryable=True,
        )
    ctx = EngineContext(
        job_id=job_id,
        attempt=attempt,
        tenant_id=tenant_id,
        store=store,
        reporter=reporter,
        workdir=workdir,
        # Set by whoever runs the pod (the operator's settings), never by the NexaJob itself.
        allowed_roots=[
            Path(p) for p in env.get("NEXA_ALLOWED_DATASET_ROOTS", "").split(os.pathsep) if p.strip()
        ],
        catalog=catalog,
        cancel_event=cancel_event or threading.Event(),
        pipeline_id=spec.labels.get(PIPELINE_LABEL),
    )
    reporter.log(f"[nexa] {job_type} {job_id} attempt {attempt} started")
    try:
        # Every reference is checked again in the pod: the NexaJob is not proof of access.
        result = run_engine(engine, ctx, spec, JobType(job_type))
    except Exception as exc:
        if not isinstance(exc, JobCancelled | EngineError):
            traceback.print_exc()
        # A cancel reaches a pod only as SIGTERM: the pod being stopped.
        failure = failure_of(exc, stopped=True)
        return _fail(env, attempt, failure.code, failure.message, retryable=failure.retryable)
    artifacts = list(dict.fromkeys(ctx.produced_artifacts))
    record = result_record(job_id, attempt, result, artifacts, reporter.usage_totals)
    try:
        if client is not None:
            client.put_run_record(job_id, attempt, "result.json", record)
            where = "the gateway's artifact store"
        else:
            where = write_result_record(env, job_id, attempt, record)
    except Exception as exc:  # the work is done but nobody could read it: another attempt redoes it
        return _fail(
            env, attempt, ErrorCode.result_unwritable, f"cannot store the result: {exc}", retryable=True
        )
    write_termination_message(env, {"attempt": attempt, "result": result, "artifacts": artifacts})
    reporter.log(f"[nexa] attempt {attempt} completed; result record at {where}")
    return EXIT_SUCCESS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nexa_engines.run_one", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--job-type", required=True, choices=[t.value for t in JobType])
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--spec-json", required=True, help="the job's contract spec as JSON")
    args = parser.parse_args(argv)
    prefer_passive_waits()  # before anything imports torch
    cancel = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        cancel.set()  # engines stop at their next check_cancelled()

    signal.signal(signal.SIGTERM, on_term)
    return run(args.job_type, args.spec_json, args.job_id, args.attempt, args.tenant, cancel_event=cancel)


if __name__ == "__main__":
    raise SystemExit(main())
