"""Rich output: job tables, job details, the progress bar, errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from nexa.client import NexaClient
from nexa.contracts import ApiKeyInfo, Dataset, Job, JobEvent, JobState
from nexa.contracts.artifacts import ArtifactDependent, Deletion, Deployment
from nexa.handles import JobHandle

# Output that is not a terminal (a pipe, a file, a CI log) has no width to fit: lines are as long as
# their content, so ids and paths are never cut or folded for `grep` and `awk` to miss.
PIPE_WIDTH = 4096


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout or stderr; unlimited width unless it is a terminal (or COLUMNS says)."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return console


console = make_console()
err_console = make_console(stderr=True)

STATUS_STYLES: dict[JobState, str] = {
    JobState.pending: "yellow",
    JobState.running: "cyan",
    JobState.completed: "green",
    JobState.failed: "red",
    JobState.cancelled: "magenta",
}


def print_error(message: str) -> None:
    """One red line on stderr."""
    err_console.print(f"[bold red]error:[/] [red]{escape(message)}[/]", soft_wrap=True)


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour, so it pipes into jq)."""
    console.file.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    console.file.flush()


def styled_status(status: JobState) -> str:
    return f"[{STATUS_STYLES.get(status, 'white')}]{status.value}[/]"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'12s ago', '5m ago', '3h ago', '2d ago'; '-' for None."""
    if moment is None:
        return "-"
    now = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def jobs_table(jobs: Iterable[Job]) -> Table:
    """One row per job: id, type, status, progress, age, labels, error."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("JOB ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "LABELS", "ERROR"):
        table.add_column(column, no_wrap=column in ("JOB ID", "TYPE", "STATUS", "PROGRESS", "CREATED"))
    for job in jobs:
        labels = ",".join(f"{k}={v}" for k, v in sorted(job.labels.items()))
        table.add_row(
            job.job_id,
            job.job_type.value,
            styled_status(job.status),
            f"{job.progress:.0%}",
            ago(job.created_at),
            escape(labels),
            escape(job.error.code) if job.error else "",
        )
    return table


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 200 else text[:197] + "..."
    return str(value)


def mapping_table(data: Mapping[str, Any], title: str | None = None) -> Table:
    """Key/value rows (nested values as compact JSON)."""
    table = Table(show_header=False, show_edge=False, title=title, title_justify="left", title_style="bold")
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(escape(str(key)), escape(_value(value)))
    return table


def events_table(events: Iterable[JobEvent]) -> Table:
    """The job's timeline."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("SEQ", "AT", "ATTEMPT", "KIND", "MESSAGE"):
        table.add_column(column)
    for event in events:
        table.add_row(
            str(event.seq),
            event.at.strftime("%Y-%m-%d %H:%M:%S"),
            str(event.attempt),
            escape(event.kind),
            escape(event.message),
        )
    return table


def print_job(job: Job) -> None:
    """A job's details: state, timing, error, result and timeline."""
    head: dict[str, Any] = {
        "job": job.job_id,
        "type": job.job_type.value,
        "status": job.status.value,
        "progress": f"{job.progress:.0%}" + (f" {job.progress_message}" if job.progress_message else ""),
        "attempts": f"{job.attempts} (retries allowed: {job.max_retries})",
        "created": job.created_at.isoformat(timespec="seconds"),
        "started": job.started_at.isoformat(timespec="seconds") if job.started_at else "-",
        "finished": job.finished_at.isoformat(timespec="seconds") if job.finished_at else "-",
    }
    if job.labels:
        head["labels"] = ",".join(f"{k}={v}" for k, v in sorted(job.labels.items()))
    if job.artifacts_uri:
        head["artifacts"] = job.artifacts_uri
    console.print(
        Panel(mapping_table(head), title=f"{job.job_type.value} job", border_style=STATUS_STYLES[job.status])
    )
    if job.error is not None:
        retry = " (retryable)" if job.error.retryable else ""
        console.print(f"[red]error {escape(job.error.code)}{retry}:[/] {escape(job.error.message)}")
    if job.result:
        console.print(mapping_table(job.result, title="result"))
    if job.events:
        console.print(events_table(job.events))


def datasets_table(datasets: Iterable[Dataset]) -> Table:
    """One row per dataset."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("DATASET ID", "NAME", "FORMAT", "ROWS", "SIZE", "CREATED"):
        table.add_column(column)
    for ds in datasets:
        table.add_row(
            ds.dataset_id,
            escape(ds.name),
            ds.format,
            "-" if ds.num_rows is None else f"{ds.num_rows:,}",
            human_bytes(ds.size_bytes),
            ago(ds.created_at),
        )
    return table


def deployments_table(deployments: Iterable[Deployment]) -> Table:
    """One row per deployment: id, state, checkpoint, where to call it."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("DEPLOYMENT ID", "STATUS", "CHECKPOINT", "MODEL", "OPENAI BASE URL", "CREATED"):
        table.add_column(column, no_wrap=column in ("DEPLOYMENT ID", "STATUS", "CHECKPOINT"))
    styles = {"running": "green", "stopping": "yellow", "stopped": "dim"}
    for d in deployments:
        table.add_row(
            d.deployment_id,
            f"[{styles.get(d.status, 'white')}]{d.status}[/]",
            d.checkpoint_id or "-",
            escape(d.model_name or "-"),
            escape(d.openai_base_url or "-"),
            ago(d.created_at),
        )
    return table


def dependents_table(rows: Iterable[ArtifactDependent], of: Mapping[str, str] | None = None) -> Table:
    """One row per dependent: what it is, why it needs the artifact, and whether force gets past it.

    ``of`` maps a dependent's id to the artifact it needs, when several were asked about (a job's outputs).
    """
    table = Table(show_edge=False, header_style="bold")
    columns = (
        ("DEPENDENT", "KIND", "NEEDS", "WHY", "FORCE?") if of else ("DEPENDENT", "KIND", "WHY", "FORCE?")
    )
    for column in columns:
        table.add_column(column, no_wrap=column in ("DEPENDENT", "NEEDS"))
    for d in rows:
        force = "[red]no: blocks[/]" if d.blocking else "[yellow]deletes past it[/]"
        cells = [d.id, d.kind, *([of.get(d.id, "-")] if of else []), escape(d.reason), force]
        table.add_row(*cells)
    return table


def print_deletion(done: Deletion) -> None:
    """What a delete removed, what it freed, and what it left with an input that is gone."""
    if done.job_id:
        console.print(f"deleted job {done.job_id} with its logs and events (its usage stays on the bill)")
    for a in done.deleted:
        console.print(f"deleted {a.artifact_id} ({a.kind}, {human_bytes(a.size_bytes)})")
    if done.deleted:
        console.print(
            f"freed {human_bytes(done.bytes_freed)}: no longer charged as storage from the next hour"
        )
    for d in done.left_dependents:
        console.print(f"[yellow]kept {d.id} ({d.reason}): an input of it is gone[/]")


def keys_table(keys: Iterable[ApiKeyInfo]) -> Table:
    """One row per API key (never the secret)."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("KEY ID", "NAME", "PREFIX", "CREATED", "LAST USED", "STATE"):
        table.add_column(column)
    now = datetime.now(UTC)
    for key in keys:
        if key.revoked_at is not None:
            state = "[red]revoked[/]"
        elif (
            key.expires_at is not None and key.expires_at.replace(tzinfo=key.expires_at.tzinfo or UTC) <= now
        ):
            state = "[yellow]expired[/]"
        else:
            state = "[green]active[/]"
        table.add_row(
            key.key_id, escape(key.name), key.prefix, ago(key.created_at), ago(key.last_used_at), state
        )
    return table


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def follow_job(
    client: NexaClient,
    job_id: str,
    *,
    timeout: float | None = None,
    poll_interval: float = 1.0,
    stderr: bool = False,
) -> JobHandle:
    """Show a progress bar until the job is terminal; returns the final job (raises WaitTimeoutError)."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}", markup=False),
    )
    with Progress(*columns, console=err_console if stderr else console, transient=False) as bar:
        task = bar.add_task(job_id, total=1.0, message="")

        def on_update(handle: JobHandle) -> None:
            job = handle.model
            bar.update(
                task,
                completed=1.0 if job.status is JobState.completed else job.progress,
                description=f"{job_id} {styled_status(job.status)}",
                message=job.progress_message or "",
            )

        return client.wait(
            job_id, timeout=timeout, poll_interval=poll_interval, on_update=on_update, raise_on_failure=False
        )


def print_outcome(job: Job) -> None:
    """One line saying how the job ended, plus its result or error."""
    if job.status is JobState.completed:
        console.print(f"[green]✓[/] {job.job_type.value} job {job.job_id} completed")
        if job.result:
            console.print(mapping_table(job.result, title="result"))
    elif job.status is JobState.failed:
        reason = f"{job.error.code}: {job.error.message}" if job.error else "no reason recorded"
        err_console.print(
            f"[bold red]✗[/] job {job.job_id} failed after {job.attempts} attempt(s): {escape(reason)}"
        )
        err_console.print(f"  see the log: nexa jobs logs {job.job_id}")
    else:
        err_console.print(f"[magenta]job {job.job_id} was {job.status.value}[/]")
