"""``nexa pipeline``: run a pipeline file, follow it, list, cancel, resume, approve, check a file locally.

Exit codes of the commands that wait (``run --wait``, ``wait``, ``resume --wait``, ``approve --wait``):
0 the pipeline completed, 1 it failed or was cancelled (or the wait timed out), 2 invalid input,
3 it waits for an approval (the command prints how to give it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from nexa.cli.context import EXIT_FAILURE, EXIT_USAGE, handle_errors, make_client, parse_pairs
from nexa.cli.render import ago, console, err_console, print_error, print_json
from nexa.client import NexaClient
from nexa.contracts.jobs import Job
from nexa.contracts.pipelines import (
    Gate,
    Pipeline,
    PipelineEvent,
    PipelineSpec,
    PipelineState,
    PipelineStepStatus,
    StepState,
)
from nexa.contracts.results import lower_is_better
from nexa.errors import NexaError, PipelineFileError
from nexa.pipelinefile import load_pipeline
from nexa.pipelineplan import cacheable, needs_of, order

app = typer.Typer(
    help="Pipelines: steps of any job type chained by their outputs, with gates and approvals.",
    no_args_is_help=True,
)

EXIT_WAITING = 3
"""A waited pipeline stopped at a step that needs an approval (``nexa pipeline approve``)."""

POLL_INTERVAL = 2.0

PIPELINE_STYLES: dict[PipelineState, str] = {
    PipelineState.pending: "yellow",
    PipelineState.running: "cyan",
    PipelineState.waiting: "bold yellow",
    PipelineState.completed: "green",
    PipelineState.failed: "red",
    PipelineState.cancelled: "magenta",
}
STEP_STYLES: dict[StepState, str] = {
    StepState.pending: "dim",
    StepState.waiting_approval: "bold yellow",
    StepState.running: "cyan",
    StepState.completed: "green",
    StepState.cached: "green",
    StepState.failed: "red",
    StepState.cancelled: "magenta",
    StepState.skipped: "dim",
}

PipelineId = Annotated[str, typer.Argument(help="Pipeline id (pl_…).")]
PipelineFile = Annotated[str, typer.Argument(help="The pipeline file (YAML or JSON).", show_default=False)]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Set a parameter the file declares: NAME=VALUE (repeatable)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (progress, if any, goes to stderr).")]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", help="Stop waiting after this many seconds (exit 1).")
]


# ---------------------------------------------------------------- rendering (pure)


def styled_pipeline_status(status: PipelineState) -> str:
    return f"[{PIPELINE_STYLES.get(status, 'white')}]{status.value}[/]"


def styled_step_status(status: StepState) -> str:
    return f"[{STEP_STYLES.get(status, 'white')}]{status.value}[/]"


def step_detail(pipeline: Pipeline, step: PipelineStepStatus, jobs: Mapping[str, Job] | None = None) -> str:
    """What a step's row says beside its state: why it waits, its progress, where its outputs came
    from, its gate's figures, why it failed (plain text, not markup)."""
    parts: list[str] = []
    status = step.status
    if status is StepState.pending:
        try:
            needs = needs_of(pipeline.spec.step(step.name))
        except KeyError:
            needs = []
        states = {s.name: s.status for s in pipeline.steps}
        open_needs = [n for n in needs if not states.get(n, StepState.pending).done]
        if open_needs:
            parts.append("waits for " + ", ".join(open_needs))
    elif status is StepState.waiting_approval:
        parts.append(f"needs approval: nexa pipeline approve {pipeline.pipeline_id} {step.name}")
    elif status is StepState.running:
        job = (jobs or {}).get(step.job_id or "")
        if job is not None:
            progress = f"{job.progress:.0%}"
            parts.append(f"{progress} {job.progress_message}" if job.progress_message else progress)
        if step.tries > 1:
            parts.append(f"try {step.tries}")
    elif status is StepState.cached:
        parts.append(f"cached from {step.cached_from}" if step.cached_from else "cached")
    if step.gate is not None:
        verdict = "gate passed" if step.gate.passed else "gate failed"
        parts.append(f"{verdict}: {step.gate.reason}")
    said = "; ".join(parts)
    if step.reason and step.reason not in said and not (step.gate and step.reason == step.gate.reason):
        parts.append(step.reason)
    if status is StepState.skipped and not step.reason:
        parts.append("not run: the pipeline stopped first")
    if step.approved_by and status is not StepState.waiting_approval:
        parts.append(f"approved by {step.approved_by}")
    return "; ".join(parts)


def steps_table(pipeline: Pipeline, jobs: Mapping[str, Job] | None = None) -> Table:
    """One row per step: name, job type, state, job id, detail."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("STEP", "TYPE", "STATUS", "JOB", "DETAIL"):
        table.add_column(column, no_wrap=column != "DETAIL")
    for step in pipeline.steps:
        table.add_row(
            escape(step.name),
            step.type.value,
            styled_step_status(step.status),
            step.job_id or "-",
            escape(step_detail(pipeline, step, jobs)),
        )
    return table


def pipeline_heading(pipeline: Pipeline) -> str:
    """``pipeline pl_… nightly: running (run 2, 3/5 steps done)`` as markup."""
    done = sum(1 for step in pipeline.steps if step.status.done)
    run = f"run {pipeline.runs}, " if pipeline.runs > 1 else ""
    return (
        f"[bold]pipeline {pipeline.pipeline_id}[/] {escape(pipeline.name)}: "
        f"{styled_pipeline_status(pipeline.status)} ({run}{done}/{len(pipeline.steps)} steps done)"
    )


def pipeline_view(pipeline: Pipeline, jobs: Mapping[str, Job] | None = None) -> Group:
    """The heading, the step table and the error, as one renderable (what the live view shows)."""
    parts: list[Any] = [pipeline_heading(pipeline), steps_table(pipeline, jobs)]
    if pipeline.error is not None:
        where = f" (step {pipeline.error.step})" if pipeline.error.step else ""
        parts.append(
            f"[red]error {escape(pipeline.error.code)}{escape(where)}:[/] {escape(pipeline.error.message)}"
        )
    return Group(*parts)


def pipelines_table(pipelines: Iterable[Pipeline]) -> Table:
    """One row per pipeline."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("PIPELINE ID", "NAME", "STATUS", "STEPS", "CREATED", "LABELS", "ERROR"):
        table.add_column(column, no_wrap=column not in ("LABELS", "ERROR"))
    for p in pipelines:
        done = sum(1 for step in p.steps if step.status.done)
        labels = ",".join(f"{k}={v}" for k, v in sorted(p.labels.items()))
        error = (
            f"{p.error.code}" + (f" ({p.error.step})" if p.error and p.error.step else "") if p.error else ""
        )
        table.add_row(
            p.pipeline_id,
            escape(p.name),
            styled_pipeline_status(p.status),
            f"{done}/{len(p.steps)}",
            ago(p.created_at),
            escape(labels),
            escape(error),
        )
    return table


def describe_gate(gate: Gate | None) -> str:
    """A gate in a few words: ``quality ≥ B; accuracy ≥ 0.8; accuracy +0.02 over base``."""
    if gate is None:
        return ""
    parts = []
    if gate.min_quality_tier:
        parts.append(f"quality tier ≥ {gate.min_quality_tier}")
    parts += [
        f"{metric} {'≤' if lower_is_better(metric) else '≥'} {bound:g}"
        for metric, bound in (gate.min_score or {}).items()
    ]
    parts += [f"{metric} {margin:+g} over base" for metric, margin in (gate.min_improvement or {}).items()]
    return "; ".join(parts)


def plan_table(spec: PipelineSpec) -> Table:
    """The steps of a checked spec in the order they can run, with what each waits for."""
    table = Table(show_edge=False, header_style="bold")
    for column in ("#", "STEP", "TYPE", "NEEDS", "APPROVAL", "GATE", "CACHE"):
        table.add_column(column, no_wrap=column not in ("NEEDS", "GATE"))
    for number, name in enumerate(order(spec), start=1):
        step = spec.step(name)
        table.add_row(
            str(number),
            escape(name),
            step.type.value,
            escape(", ".join(needs_of(step)) or "-"),
            "yes" if step.approval else "-",
            escape(describe_gate(step.gate) or "-"),
            "yes" if cacheable(step) else "no",
        )
    return table


def event_line(event: PipelineEvent) -> str:
    """One event as a line of markup: seq, time, kind, step, job, message."""
    cells = [
        f"{event.seq:>4}",
        event.at.strftime("%Y-%m-%d %H:%M:%S"),
        f"{event.kind.value:<21}",
        escape(event.step or "-"),
        event.job_id or "",
        escape(event.message),
    ]
    return "  ".join(cell for cell in cells if cell)


def exit_code(pipeline: Pipeline) -> int:
    """0 completed, 3 waiting for an approval, 1 otherwise (failed, cancelled, or still going)."""
    if pipeline.status is PipelineState.completed:
        return 0
    if pipeline.status is PipelineState.waiting:
        return EXIT_WAITING
    return EXIT_FAILURE


# ---------------------------------------------------------------- I/O helpers


def _load(file: str, params: list[str] | None) -> PipelineSpec:
    """The checked spec of ``file``; every problem printed on stderr and exit 2 otherwise."""
    parameters = parse_pairs(params, "--param")
    try:
        return load_pipeline(file, parameters or None)
    except PipelineFileError as exc:
        _report_invalid(exc)
        raise typer.Exit(EXIT_USAGE) from None


def _report_invalid(exc: PipelineFileError) -> None:
    if len(exc.problems) == 1:
        print_error(exc.message)
        return
    print_error(f"{exc.source}: {len(exc.problems)} problems")
    for problem in exc.problems:
        err_console.print(f"  - {escape(problem)}", soft_wrap=True)


def _running_jobs(client: NexaClient, pipeline: Pipeline) -> dict[str, Job]:
    """The jobs of the running steps, for their progress; one that cannot be read is left out."""
    jobs: dict[str, Job] = {}
    for step in pipeline.steps:
        if step.status is StepState.running and step.job_id:
            try:
                jobs[step.job_id] = client.status(step.job_id).model
            except NexaError:
                continue  # progress is a nicety; the next poll of the pipeline reports real trouble
    return jobs


class _Progress:
    """The live step table on a terminal; elsewhere (a pipe, a CI log) one line per step change."""

    def __init__(self, client: NexaClient, target: Console) -> None:
        self.client = client
        self.target = target
        self.live: Live | None = None
        self.seen: dict[str, tuple[StepState, str | None]] = {}
        self.last: Pipeline | None = None
        self.jobs: dict[str, Job] = {}

    def __enter__(self) -> _Progress:
        if self.target.is_terminal:
            self.live = Live(console=self.target, auto_refresh=False, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
        if self.last is not None:
            self.target.print(pipeline_view(self.last, self.jobs))

    def update(self, pipeline: Pipeline) -> None:
        self.last = pipeline
        self.jobs = _running_jobs(self.client, pipeline)
        if self.live is not None:
            self.live.update(pipeline_view(pipeline, self.jobs), refresh=True)
            return
        for step in pipeline.steps:
            now = (step.status, step.job_id)
            if self.seen.get(step.name) != now:
                self.seen[step.name] = now
                if step.status is StepState.pending:
                    continue  # where every step starts: not news
                job = f" {step.job_id}" if step.job_id else ""
                detail = step_detail(pipeline, step, self.jobs)
                self.target.print(
                    f"{escape(step.name)}: {styled_step_status(step.status)}{job}"
                    + (f" ({escape(detail)})" if detail else ""),
                    soft_wrap=True,
                )


def follow_pipeline(
    client: NexaClient,
    pipeline_id: str,
    *,
    timeout: float | None = None,
    poll_interval: float = POLL_INTERVAL,
    stderr: bool = False,
) -> Pipeline:
    """Show the steps until the pipeline is terminal or waits for an approval; the final table stays."""
    with _Progress(client, err_console if stderr else console) as progress:
        return client.wait_pipeline(
            pipeline_id, timeout=timeout, poll_interval=poll_interval, on_update=progress.update
        )


def finish(pipeline: Pipeline, *, as_json: bool) -> None:
    """Print how the pipeline ended (JSON on stdout with ``--json``) and exit with its code."""
    if as_json:
        print_json(pipeline.model_dump(mode="json"))
    status = pipeline.status
    out = err_console if as_json or status is not PipelineState.completed else console
    if status is PipelineState.completed:
        out.print(f"[green]✓[/] pipeline {pipeline.pipeline_id} ({escape(pipeline.name)}) completed")
    elif status is PipelineState.waiting:
        held = [s.name for s in pipeline.steps if s.status is StepState.waiting_approval]
        out.print(
            f"[yellow]pipeline {pipeline.pipeline_id} waits for an approval of "
            f"{escape(', '.join(held) or 'a step')}[/]"
        )
        for name in held:
            out.print(f"  approve: nexa pipeline approve {pipeline.pipeline_id} {escape(name)} --wait")
        out.print(f"  or stop it: nexa pipeline cancel {pipeline.pipeline_id}")
    elif status in (PipelineState.failed, PipelineState.cancelled):
        reason = f": {pipeline.error.code}: {pipeline.error.message}" if pipeline.error else ""
        where = f" at step {pipeline.error.step}" if pipeline.error and pipeline.error.step else ""
        out.print(f"[bold red]✗[/] pipeline {pipeline.pipeline_id} {status.value}{escape(where + reason)}")
        out.print(f"  run its unfinished steps again: nexa pipeline resume {pipeline.pipeline_id} --wait")
    else:
        out.print(f"pipeline {pipeline.pipeline_id} is {status.value}")
    code = exit_code(pipeline)
    if code:
        raise typer.Exit(code)


def _after_action(
    client: NexaClient, pipeline: Pipeline, *, wait: bool, timeout: float | None, as_json: bool
) -> None:
    if wait:
        finish(
            follow_pipeline(client, pipeline.pipeline_id, timeout=timeout, stderr=as_json), as_json=as_json
        )
    elif as_json:
        print_json(pipeline.model_dump(mode="json"))


# ---------------------------------------------------------------- commands


@app.command("run")
@handle_errors
def run(
    file: PipelineFile,
    param: ParamOption = None,
    wait: Annotated[
        bool,
        typer.Option("--wait/--no-wait", help="Follow the steps until the pipeline ends (see exit codes)."),
    ] = False,
    timeout: TimeoutOption = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="A repeat with this key returns the first pipeline."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a pipeline file. With --wait: exit 0 completed, 1 failed or cancelled, 3 waiting for an approval."""
    spec = _load(file, param)
    with make_client() as client:
        created = client.pipeline(spec, idempotency_key=idempotency_key)
        if not as_json:
            console.print(
                f"submitted pipeline [bold]{created.pipeline_id}[/] ({escape(created.name)}, "
                f"{len(created.steps)} steps)"
            )
            if not wait:
                console.print(f"  follow it: nexa pipeline wait {created.pipeline_id}")
        _after_action(client, created, wait=wait, timeout=timeout, as_json=as_json)


@app.command("validate")
@handle_errors
def validate(file: PipelineFile, param: ParamOption = None) -> None:
    """Check a pipeline file here, as the gateway would, without submitting it (exit 2 if invalid)."""
    spec = _load(file, param)
    console.print(f"[green]✓[/] {escape(file)}: pipeline {escape(spec.name)}, {len(spec.steps)} steps")
    console.print(plan_table(spec))
    if spec.parameters:
        console.print(
            "parameters: " + escape(", ".join(f"{k}={v}" for k, v in sorted(spec.parameters.items()))),
            soft_wrap=True,
        )


@app.command("get")
@handle_errors
def get(
    pipeline_id: PipelineId, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """A pipeline's state and every step's."""
    with make_client() as client:
        found = client.get_pipeline(pipeline_id)
        jobs = {} if as_json else _running_jobs(client, found)
    if as_json:
        print_json(found.model_dump(mode="json"))
    else:
        console.print(pipeline_view(found, jobs))


@app.command("list")
@handle_errors
def list_pipelines(
    status: Annotated[
        PipelineState | None, typer.Option("--status", "-s", help="Only pipelines in this state.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only pipelines of this name.")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="Only pipelines with label KEY=VALUE (repeatable)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pipelines, newest first."""
    labels = parse_pairs(label, "--label")
    with make_client() as client:
        found = list(client.list_pipelines(status=status, name=name, labels=labels or None, limit=limit))
    if as_json:
        print_json([p.model_dump(mode="json") for p in found])
    elif not found:
        console.print("no pipelines" + (" match these filters" if status or name or labels else " yet"))
    else:
        console.print(pipelines_table(found))


@app.command("wait")
@handle_errors
def wait_command(pipeline_id: PipelineId, timeout: TimeoutOption = None, as_json: JsonOption = False) -> None:
    """Follow the steps until the pipeline ends: exit 0 completed, 1 failed or cancelled, 3 waiting for an approval."""
    with make_client() as client:
        final = follow_pipeline(client, pipeline_id, timeout=timeout, stderr=as_json)
    finish(final, as_json=as_json)


@app.command("cancel")
@handle_errors
def cancel(pipeline_id: PipelineId) -> None:
    """Cancel a pipeline: its running jobs are cancelled, its steps not started are skipped."""
    with make_client() as client:
        found = client.cancel_pipeline(pipeline_id)
    console.print(f"pipeline {found.pipeline_id} is {found.status.value}")


@app.command("resume")
@handle_errors
def resume(
    pipeline_id: PipelineId,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the steps until it ends.")] = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a failed or cancelled pipeline again from its unfinished steps (done steps are kept)."""
    with make_client() as client:
        found = client.resume_pipeline(pipeline_id)
        if not as_json:
            console.print(f"pipeline {found.pipeline_id} resumed (run {found.runs}): {found.status.value}")
        _after_action(client, found, wait=wait, timeout=timeout, as_json=as_json)


@app.command("approve")
@handle_errors
def approve(
    pipeline_id: PipelineId,
    step: Annotated[str, typer.Argument(help="The step waiting for approval.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the steps until it ends.")] = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let a step held for approval start."""
    with make_client() as client:
        found = client.approve_step(pipeline_id, step)
        if not as_json:
            console.print(
                f"approved step {escape(step)} of pipeline {found.pipeline_id}: {found.status.value}"
            )
        _after_action(client, found, wait=wait, timeout=timeout, as_json=as_json)


@app.command("events")
@handle_errors
def events(
    pipeline_id: PipelineId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the pipeline ends.")
    ] = False,
    after: Annotated[int | None, typer.Option("--after", min=0, help="Only events after this seq.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The pipeline's timeline: steps started, cached, retried, completed, failed, approvals, the end."""
    with make_client() as client:
        for event in client.pipeline_events(pipeline_id, follow=follow, after=after):
            if as_json:
                console.file.write(event.model_dump_json() + "\n")
                console.file.flush()
            else:
                console.print(event_line(event), soft_wrap=True)
