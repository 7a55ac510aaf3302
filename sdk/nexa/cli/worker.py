"""``nexa worker``: run a pull worker in the foreground against any gateway."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from nexa import config, logs
from nexa.cli.context import EXIT_USAGE, CliError, handle_errors
from nexa.contracts import JobType


@handle_errors
def worker(
    gateway: Annotated[
        str | None,
        typer.Option("--gateway", "-g", help="Gateway URL (default: the one `nexa up` configured)."),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            help="The gateway's worker secret, or your tenant's node token (nexan_…: the machine is then yours "
            "and runs only your jobs). Default: $NEXA_WORKER_SECRET, then the local config.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="Jobs run at once.")
    ] = 1,
    name: Annotated[str | None, typer.Option("--name", help="Worker name (default: hostname-pid).")] = None,
    job_type: Annotated[
        list[JobType] | None,
        typer.Option("--job-type", help="Only these job types (repeatable; default: all installed)."),
    ] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Scratch directory for jobs.")] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir", help="Where the node's Ed25519 key is kept (default: $NEXA_HOME/worker)."
        ),
    ] = None,
    tier: Annotated[
        str | None,
        typer.Option(
            "--tier",
            help="Pin this node's tier: cpu, consumer-gpu or hpc (default: from its profile, see docs/mesh.md).",
        ),
    ] = None,
    no_benchmark: Annotated[
        bool,
        typer.Option(
            "--no-benchmark",
            help="Skip the throughput challenge at registration (the node then earns no credits; docs/mesh.md).",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run a pull worker until Ctrl-C (running jobs finish or are handed back)."""
    try:
        from nexa_engines.worker import WorkerSetupError, quiet_http_logs, run_worker
    except ImportError as exc:
        raise CliError(
            f"the engines are not installed ({exc}): pip install 'nexa-forge[engines]'", EXIT_USAGE
        ) from exc
    stored = config.load_config()
    url = gateway or os.environ.get(config.ENV_BASE_URL) or stored.get("base_url")
    if not url:
        raise CliError("no gateway: pass --gateway URL", EXIT_USAGE)
    worker_secret = secret or os.environ.get("NEXA_WORKER_SECRET") or stored.get("worker_secret")
    if not worker_secret:
        raise CliError("no worker secret: pass --secret or set NEXA_WORKER_SECRET", EXIT_USAGE)
    try:
        logs.configure("worker", logging.DEBUG if verbose else logging.INFO)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    quiet_http_logs()
    if no_benchmark:
        os.environ["NEXA_WORKER_BENCHMARK"] = "0"  # read by nexa_engines.benchmark_challenge
    try:
        run_worker(
            str(url),
            str(worker_secret),
            name=name,
            concurrency=concurrency,
            job_types=list(job_type) if job_type else None,
            workdir=workdir,
            tier=tier,
            state_dir=state_dir,
        )
    except WorkerSetupError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
