"""``nexa demo``: audit a generated sample dataset end to end on a local Nexa.

Uses the running local Nexa when there is one; otherwise starts one in a
temporary NEXA_HOME (leaving the user's config alone) and stops it at the end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nexa.cli.context import EXIT_FAILURE, OPTIONS, CliError, handle_errors
from nexa.cli.render import console, err_console, follow_job, print_outcome
from nexa.client import NexaClient
from nexa.contracts import JobState
from nexa.errors import APIConnectionError, AuthenticationError, ConfigError, NexaError


def _existing_client() -> NexaClient | None:
    """A client for an already running Nexa the config points at, else None."""
    try:
        client = NexaClient(api_key=OPTIONS.api_key, base_url=OPTIONS.base_url, max_retries=0, timeout=5.0)
    except ConfigError:
        return None
    try:
        client.health()
        client.list_keys()  # proves the key works, not only that something answers
    except (APIConnectionError, AuthenticationError, ConfigError):
        client.close()
        return None
    except NexaError:
        client.close()
        return None
    return client


@contextmanager
def local_nexa() -> Iterator[NexaClient]:
    """A client for a running Nexa; starts a temporary one (stopped on exit) when none is up."""
    existing = _existing_client()
    if existing is not None:
        console.print(f"using the Nexa at {existing.base_url}")
        with existing:
            yield existing
        return
    from nexa.cli.local import free_port, start_local, stop_local

    home = Path(tempfile.mkdtemp(prefix="nexa-demo-"))
    try:
        with console.status("no Nexa running: starting a temporary one..."):
            local = start_local(home, port=free_port(), workers=1, write_config=False)
        console.print(f"started a temporary Nexa at {local.url} (home {home})")
        with NexaClient(api_key=local.api_key, base_url=local.url) as client:
            yield client
    finally:
        with console.status("stopping the temporary Nexa..."):
            stop_local(home, grace=10.0)
        shutil.rmtree(home, ignore_errors=True)


def planted_counts(generated: Mapping[str, Any]) -> dict[str, int]:
    """Flag name -> how many rows the sample generator planted with it, plus ``num_rows``."""
    counts = {str(flag): int(n) for flag, n in generated["counts"].items()}
    counts["num_rows"] = int(generated["num_rows"])
    return counts


def summary_table(result: Mapping[str, Any], planted: Mapping[str, int], seconds: float) -> Table:
    """Rows, score, tier, flag counts against what was planted, duplicates, report, time taken."""
    table = Table(title="audit summary", title_justify="left", show_edge=False, header_style="bold")
    table.add_column("")
    table.add_column("found", justify="right")
    table.add_column("planted", justify="right")
    table.add_row(
        "rows", f"{result.get('num_rows', '-')}", f"{planted['num_rows']}" if "num_rows" in planted else ""
    )
    mean = result.get("mean_score")
    table.add_row("mean score", f"{mean:.3f}" if isinstance(mean, int | float) else "-", "")
    table.add_row("quality tier", escape(str(result.get("quality_tier", "-"))), "")
    flags = result.get("flag_counts") or {}
    for name in sorted(set(flags) | {k for k in planted if k != "num_rows" and k != "rows"}):
        found = flags.get(name)
        table.add_row(f"  {name}", "-" if found is None else str(found), str(planted.get(name, "")))
    table.add_row("exact duplicates", str(result.get("exact_duplicates", "-")), "")
    table.add_row("near-duplicate clusters", str(result.get("near_duplicate_clusters", "-")), "")
    table.add_row("report", escape(str(result.get("report_uri", "-"))), "")
    table.add_row("time taken", f"{seconds:.1f} s", "")
    return table


def top_flagged(report: Mapping[str, Any], limit: int = 10) -> Table | None:
    """The report's example rows per flag, at most ``limit``."""
    examples = report.get("examples") or {}
    per_flag = [
        [
            (str(item.get("row", "?")), str(flag), str(item.get("detail", "")))
            for item in items
            if isinstance(item, Mapping)
        ]
        for flag, items in examples.items()
        if isinstance(items, list)
    ]
    # Round-robin over the flags so every kind of problem shows up, not ten of the first one.
    rows = [
        group[i]
        for i in range(max((len(g) for g in per_flag), default=0))
        for group in per_flag
        if i < len(group)
    ]
    if not rows:
        return None
    table = Table(title="top flagged rows", title_justify="left", show_edge=False, header_style="bold")
    for column in ("ROW", "FLAG", "DETAIL"):
        table.add_column(column)
    for row, flag, detail in rows[:limit]:
        table.add_row(row, escape(flag), escape(detail if len(detail) <= 100 else detail[:97] + "..."))
    return table


def _sample_dataset(directory: Path, rows: int, seed: int) -> tuple[Path, dict[str, int]]:
    try:
        from nexa_engines.sample_data import generate_sft_dataset
    except ImportError as exc:
        raise CliError(f"the demo needs the engines ({exc}): pip install 'nexa[engines]'") from exc
    path = directory / "nexa-demo.jsonl"
    return path, planted_counts(generate_sft_dataset(path, rows, seed, "jsonl"))


@handle_errors
def demo(
    rows: Annotated[
        int, typer.Option("--rows", min=100, max=1_000_000, help="Rows in the sample dataset (at least 100).")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample dataset.")] = 7,
) -> None:
    """Generate a sample dataset, upload it, audit it, and show what the audit found."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nexa-demo-data-") as scratch, local_nexa() as client:
        with console.status(f"generating {rows} sample rows with planted problems..."):
            path, planted = _sample_dataset(Path(scratch), rows, seed)
        dataset = client.upload_dataset(path, name="nexa-demo")
        console.print(f"uploaded {path.name} as [bold]{dataset.dataset_id}[/]")
        job = client.audit(dataset_uri=dataset.dataset_id, labels={"source": "nexa-demo"})
        console.print(f"submitted audit job [bold]{job.job_id}[/]")
        final = follow_job(client, job.job_id, timeout=1800.0, poll_interval=0.5)
        if final.status is not JobState.completed:
            print_outcome(final.model)
            raise typer.Exit(EXIT_FAILURE)
        result = final.result or {}
        console.print(summary_table(result, planted, time.monotonic() - started))
        audited = result.get("dataset_id")
        if isinstance(audited, str):
            try:
                report = json.loads(client.read_artifact_file(audited, "report.json"))
            except (NexaError, ValueError) as exc:
                err_console.print(f"[yellow]could not read the audit report: {escape(str(exc))}[/]")
            else:
                table = top_flagged(report)
                if table is not None:
                    console.print(table)
        console.print(f"details: nexa jobs get {job.job_id}    log: nexa jobs logs {job.job_id}")
