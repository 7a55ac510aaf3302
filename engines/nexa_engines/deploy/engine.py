"""The deploy engine (standalone mode): start a detached serving process and record the deployment.

The serving process runs on this worker's machine in its own session, so it
outlives the job and the worker. The engine waits until ``/v2/health/ready``
answers, then commits a ``dp_…`` artifact (``deployment.json``: url, pid, host,
checkpoint, started_at) and returns ``deployment_id`` and ``inference_url``.
Undeploy is a stop request in the artifact store (``nexa_store.serving``).

Settings: ``NEXA_SERVE_BIND`` (default 127.0.0.1) is the address the server
binds; ``NEXA_SERVE_PUBLIC_HOST`` the host name put in ``inference_url``
(default: the bind address, or this machine's name when binding 0.0.0.0).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from nexa.config import nexa_home
from nexa.contracts import DeploySpec, InputSource
from nexa.contracts.catalog import CATALOG_SETTING, CatalogEntry, catalog_json
from nexa.contracts.refs import artifact_ref_uri
from nexa.ids import new_id
from nexa_engines.deploy.export import hf_checkpoint
from nexa_engines.engine import EngineContext, EngineError
from nexa_engines.serve.auth import ENDPOINT_KEY_PREFIX, key_sha256
from nexa_store.serving import DEPLOYMENT_FILE

READY_TIMEOUT_S = 600.0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def serving_root() -> Path:
    """Where serving processes keep their logs and fetched models."""
    return nexa_home() / "serving"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_server(
    *,
    checkpoint_id: str,
    deployment_id: str,
    store_config: dict[str, Any],
    max_batch_size: int,
    bind: str,
    directory: Path,
    tenant_id: str | None = None,
    endpoint_key_sha256: str | None = None,
    catalog: Mapping[str, CatalogEntry] | None = None,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Launch the serving process detached; returns it, its port and its log file."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port(bind)
    log_path = directory / "serve.log"
    args = [
        sys.executable, "-m", "nexa_engines.serve",
        "--checkpoint", checkpoint_id,
        "--store-config", json.dumps(store_config),
        "--deployment-id", deployment_id,
        "--host", bind,
        "--port", str(port),
        "--max-batch-size", str(max_batch_size),
        "--workdir", str(directory / "models"),
    ]  # fmt: skip
    if tenant_id and os.environ.get("NEXA_GATEWAY_URL"):
        args += ["--tenant", tenant_id, "--gateway-url", os.environ["NEXA_GATEWAY_URL"]]
    env = dict(os.environ)
    env["NEXA_SERVE_KEY_SHA256"] = endpoint_key_sha256 or ""
    if catalog:
        # An adapter's base may be a catalog name; the server resolves it as the job did.
        env[CATALOG_SETTING] = catalog_json(catalog)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=directory,
            env=env,
        )
    return process, port, log_path


def wait_ready(
    ctx: EngineContext, process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float
) -> None:
    """Block until the server answers ready; ``EngineError`` with its log when it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(
                "serve_failed",
                f"the serving process exited with status {process.returncode} before it was ready:\n{_tail(log_path)}",
                retryable=False,
            )
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if ctx.cancel_event.wait(0.3):
            process.terminate()
            ctx.check_cancelled()
    process.terminate()
    raise EngineError(
        "serve_timeout",
        f"the serving process was not ready after {timeout:.0f}s:\n{_tail(log_path)}",
        retryable=True,
    )


def run(ctx: EngineContext, spec: DeploySpec) -> dict[str, Any]:
    """Start serving ``spec.checkpoint_id``; return ``deployment_id`` and ``inference_url``."""
    if not isinstance(spec, DeploySpec):
        spec = DeploySpec.model_validate(spec)
    if not ctx.store.exists(spec.checkpoint_id):
        raise EngineError("checkpoint_not_found", f"checkpoint {spec.checkpoint_id} does not exist")
    if spec.replicas > 1 or spec.max_replicas > 1:
        ctx.log("standalone mode runs one serving process; replicas and autoscaling apply on Kubernetes")
    # SPEC §8.5: the checkpoint is also kept in Hugging Face format (an adapter merged into its base).
    ctx.progress(0.02, "preparing a Hugging Face copy of the checkpoint")
    hf_checkpoint_id = hf_checkpoint(ctx, spec.checkpoint_id)
    deployment_id = new_id("dp")
    bind = os.environ.get("NEXA_SERVE_BIND", "127.0.0.1")
    public = os.environ.get("NEXA_SERVE_PUBLIC_HOST") or (
        socket.gethostname() if bind in ("0.0.0.0", "::") else bind
    )
    directory = serving_root() / deployment_id
    # A key scoped to this endpoint; the serving process keeps only its hash. Callers may
    # also use their tenant's API keys (checked with the gateway the worker reports to).
    # A gateway derives the key and hands over only its hash (services.endpointkeys);
    # without one (a pod, a test), the key is made here and returned in the result.
    endpoint_key = None if ctx.endpoint_key_sha256 else ENDPOINT_KEY_PREFIX + secrets.token_urlsafe(32)
    endpoint_key_hash = ctx.endpoint_key_sha256 or key_sha256(str(endpoint_key))
    ctx.progress(0.1, "starting the serving process")
    process, port, log_path = start_server(
        checkpoint_id=spec.checkpoint_id,
        deployment_id=deployment_id,
        store_config=ctx.store.describe(),
        max_batch_size=spec.max_batch_size,
        bind=bind,
        directory=directory,
        tenant_id=ctx.tenant_id,
        endpoint_key_sha256=endpoint_key_hash,
        catalog=ctx.catalog,
    )
    local_url = f"http://{'127.0.0.1' if bind in ('0.0.0.0', '::') else bind}:{port}"
    ctx.log(f"serving process {process.pid} starting on port {port} (log {log_path})")
    started = time.monotonic()
    wait_ready(
        ctx, process, local_url, log_path, float(os.environ.get("NEXA_SERVE_READY_TIMEOUT", READY_TIMEOUT_S))
    )
    ctx.log(f"ready after {time.monotonic() - started:.1f}s")
    inference_url = f"http://{public}:{port}"
    record = {
        "deployment_id": deployment_id,
        "checkpoint_id": spec.checkpoint_id,
        "url": inference_url,
        "openai_base_url": f"{inference_url}/v1",
        "model_name": deployment_id,
        "pid": process.pid,
        "host": socket.gethostname(),
        "protocol": spec.protocol,
        "max_batch_size": spec.max_batch_size,
        "started_at": datetime.now(UTC).isoformat(),
        "log_path": str(log_path),
        "auth": {
            "endpoint_key_sha256": endpoint_key_hash,
            "tenant_keys": bool(os.environ.get("NEXA_GATEWAY_URL")),
        },
    }
    try:
        with ctx.store.begin("deployment", deployment_id) as writer:
            (writer.path / DEPLOYMENT_FILE).write_text(json.dumps(record, indent=2))
            writer.commit(
                job_id=ctx.job_id,
                attempt=ctx.attempt,
                tenant_id=ctx.tenant_id,
                pipeline_id=ctx.pipeline_id,
                inputs=[
                    InputSource(uri=artifact_ref_uri(spec.checkpoint_id), artifact_id=spec.checkpoint_id)
                ],
                config={"record": "deployment", **{k: v for k, v in record.items() if k != "log_path"}},
            )
    except Exception:
        process.terminate()  # never leave a server running that no record points at
        raise
    ctx.produced_artifacts.append(deployment_id)
    # The server outlives this job; when it exits (undeploy), someone must collect its exit status or
    # it lingers as a zombie for as long as the worker runs. A daemon thread waiting on it does that.
    threading.Thread(target=process.wait, name=f"reap-{deployment_id}", daemon=True).start()
    ctx.usage("deployments", 1)
    return {
        "deployment_id": deployment_id,
        "inference_url": inference_url,
        "openai_base_url": f"{inference_url}/v1",
        "model_name": deployment_id,
        "checkpoint_id": spec.checkpoint_id,
        "hf_checkpoint_id": hf_checkpoint_id,
        "hf_checkpoint_uri": artifact_ref_uri(hf_checkpoint_id),
        **({"api_key": endpoint_key} if endpoint_key else {}),
        "pid": process.pid,
        "host": record["host"],
    }
