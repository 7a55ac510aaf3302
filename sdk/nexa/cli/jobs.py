"""``nexa jobs``: list, get, cost, logs, cancel, wait, events, delete."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from nexa.cli.artifacts import FORCE_HELP, run_deletion
from nexa.cli.context import EXIT_FAILURE, handle_errors, make_client, parse_pairs
from nexa.cli.render import (
    console,
    events_table,
    follow_job,
    jobs_table,
    print_job,
    print_json,
    print_outcome,
)
from nexa.contracts import JobState, JobType

app = typer.Typer(help="Follow and manage jobs.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_jobs(
    job_type: Annotated[JobType | None, typer.Option("--type", "-t", help="Only this job type.")] = None,
    status: Annotated[
        JobState | None, typer.Option("--status", "-s", help="Only jobs in this state.")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Only jobs with label KEY=VALUE (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many jobs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Jobs, newest first."""
    labels = parse_pairs(label, "--label")
    with make_client() as client:
        jobs = [
            h.model
            for h in client.list_jobs(type=job_type, status=status, labels=labels or None, limit=limit)
        ]
    if as_json:
        print_json([job.model_dump(mode="json") for job in jobs])
    elif not jobs:
        console.print("no jobs" + (" match these filters" if job_type or status or labels else " yet"))
    else:
        console.print(jobs_table(jobs))


@app.command("get")
@handle_errors
def get_job(
    job_id: Annotated[str, typer.Argument(help="Job id (job_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One job's state, result, error and timeline."""
    with make_client() as client:
        job = client.status(job_id).model
    if as_json:
        print_json(job.model_dump(mode="json"))
    else:
        print_job(job)


@app.command("cost")
@handle_errors
def cost(
    job_id: Annotated[str, typer.Argument(help="Job id (job_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What the job was estimated to cost when submitted, beside what it has been charged."""
    from nexa.cli.billing import cost_table

    with make_client() as client:
        found = client.job_cost(job_id)
    if as_json:
        print_json(found.model_dump(mode="json"))
    else:
        console.print(cost_table(found))


@app.command("logs")
@handle_errors
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id (job_…).")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")
    ] = False,
) -> None:
    """The job's log lines (every attempt's)."""
    with make_client() as client:
        for line in client.logs(job_id, follow=follow):
            sys.stdout.write(line.line + "\n")
            sys.stdout.flush()


@app.command("cancel")
@handle_errors
def cancel(job_id: Annotated[str, typer.Argument(help="Job id (job_…).")]) -> None:
    """Cancel a pending or running job."""
    with make_client() as client:
        job = client.cancel(job_id).model
    console.print(f"job {job.job_id} is {job.status.value}")


@app.command("wait")
@handle_errors
def wait(
    job_id: Annotated[str, typer.Argument(help="Job id (job_…).")],
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final job as JSON.")] = False,
) -> None:
    """Show a progress bar until the job ends; exit 1 unless it completed."""
    with make_client() as client:
        final = follow_job(client, job_id, timeout=timeout, stderr=as_json)
    if as_json:
        print_json(final.to_dict())
    else:
        print_outcome(final.model)
    if final.status is not JobState.completed:
        raise typer.Exit(EXIT_FAILURE)


@app.command("events")
@handle_errors
def events(
    job_id: Annotated[str, typer.Argument(help="Job id (job_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The job's timeline: created, claimed, progress, retries, the end."""
    with make_client() as client:
        timeline = client.events(job_id)
    if as_json:
        print_json([event.model_dump(mode="json") for event in timeline])
    else:
        console.print(events_table(timeline))


@app.command("delete")
@handle_errors
def delete(
    job_id: Annotated[str, typer.Argument(help="Job id (job_…) of a finished job.")],
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete a finished job with its logs, events and output artifacts; its usage stays on the bill."""
    run_deletion(lambda client: client.delete_job(job_id, force=force), as_json=as_json)
