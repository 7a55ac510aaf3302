"""``nexa demo``: audit a sample dataset, then run the whole model lifecycle on a local Nexa.

The lifecycle, every step a real job: train a tiny teacher and deploy it,
generate data with it, audit that data, distill a prompt set through the
teacher, train a student on the distilled data, evaluate it against its
untrained base on held-out rows, deploy it, ask it one question with the
``openai`` client, and undeploy both servers. Nothing is downloaded: the tiny
models and their tokenizers are built locally (``nexa_engines.models.tiny``).

Uses the running local Nexa when there is one; otherwise starts one in a
temporary NEXA_HOME (leaving the user's config alone) and stops it at the end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nexa.cli.context import EXIT_FAILURE, OPTIONS, CliError, handle_errors
from nexa.cli.lineage import lineage_tree
from nexa.cli.pipelines import follow_pipeline
from nexa.cli.render import console, err_console, follow_job, print_outcome
from nexa.client import NexaClient
from nexa.contracts import JobState
from nexa.contracts.billing import BillingSummary, CostEstimate
from nexa.contracts.jobs import JobType
from nexa.contracts.lineage import Lineage
from nexa.contracts.pipelines import Pipeline, PipelineState, StepState
from nexa.errors import APIConnectionError, AuthenticationError, ConfigError, NexaError
from nexa.pipelinefile import load_pipeline

LIFECYCLE_FILE = "pipeline-lifecycle.yaml"


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
    with temporary_nexa("nexa-demo-", "no Nexa running: starting a temporary one...") as client:
        yield client


@contextmanager
def temporary_nexa(prefix: str, starting: str, tiers: tuple[str, ...] = ()) -> Iterator[NexaClient]:
    """A client for a Nexa started in a temporary NEXA_HOME and stopped (and removed) on exit: one
    worker, or one node per tier in ``tiers``."""
    from nexa.cli.local import free_port, start_local, stop_local

    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with console.status(starting):
            local = start_local(
                home, port=free_port(), workers=max(1, len(tiers)), write_config=False, worker_tiers=tiers
            )
        pinned = f", nodes pinned to {', '.join(tiers)}" if tiers else ""
        console.print(f"started a temporary Nexa at {local.url} (home {home}{pinned})")
        with NexaClient(api_key=local.api_key, base_url=local.url) as client:
            yield client
    finally:
        with console.status("stopping the temporary Nexa..."):
            stop_local(home, grace=10.0)
        shutil.rmtree(home, ignore_errors=True)


# One node per tier (pinned: a tier is the node owner's claim, which the gateway's benchmark confirms or not).
MESH_TIERS = ("cpu", "consumer-gpu", "hpc")


def run_mesh(client: NexaClient, scratch: Path, rows: int, seed: int, timeout: float = 900.0) -> None:
    """A verified audit on three nodes: each runs a replica, the gateway compares what they wrote,
    and the nodes are credited for the work a quorum accepted."""
    from nexa.cli.mesh import leaderboard_table, verification_table

    deadline = time.monotonic() + 120
    while len(client.list_workers()) < len(MESH_TIERS):  # each node registers and runs its benchmark
        if time.monotonic() > deadline:
            raise CliError(f"only {len(client.list_workers())} of {len(MESH_TIERS)} nodes registered")
        time.sleep(0.5)
    path, _ = _sample_dataset(scratch, rows, seed)
    dataset = client.upload_dataset(path, name="nexa-mesh-demo")
    job = client.audit(
        dataset_uri=dataset.dataset_id,
        labels={"source": "nexa-demo-mesh"},
        verification={"replicas": 3, "quorum": 2},
    )
    console.print(f"submitted verified audit [bold]{job.job_id}[/]: 3 replicas on 3 nodes, 2 must agree")
    final = follow_job(client, job.job_id, timeout=timeout, poll_interval=0.5)
    if final.status is not JobState.completed:
        print_outcome(final.model)
        raise typer.Exit(EXIT_FAILURE)
    until = time.monotonic() + timeout
    status = client.job_verification(job.job_id)
    while any(r.verdict == "pending" for r in status.replicas) and time.monotonic() < until:
        time.sleep(0.5)  # the last replica may finish after the quorum: it is judged then
        status = client.job_verification(job.job_id)
    console.print(verification_table(status))
    console.print(leaderboard_table(client.leaderboard(limit=10)))


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
    # Labelled with the SPEC's result field names (§8.1).
    table.add_row("dataset_id", escape(str(result.get("dataset_id", "-"))), "")
    score = result.get("overall_quality_score", result.get("mean_score"))
    table.add_row("overall_quality_score", f"{score:.3f}" if isinstance(score, int | float) else "-", "")
    table.add_row("quality_tier", escape(str(result.get("quality_tier", "-"))), "")
    flags = result.get("flag_counts") or {}
    for name in sorted(set(flags) | {k for k in planted if k != "num_rows" and k != "rows"}):
        found = flags.get(name)
        table.add_row(f"  {name}", "-" if found is None else str(found), str(planted.get(name, "")))
    table.add_row("exact duplicates", str(result.get("exact_duplicates", "-")), "")
    table.add_row("near-duplicate clusters", str(result.get("near_duplicate_clusters", "-")), "")
    table.add_row("scored_dataset_uri", escape(str(result.get("scored_dataset_uri", "-"))), "")
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
        raise CliError(f"the demo needs the engines ({exc}): pip install 'nexa-forge[engines]'") from exc
    path = directory / "nexa-demo.jsonl"
    return path, planted_counts(generate_sft_dataset(path, rows, seed, "jsonl"))


# ---- the model lifecycle


@dataclass
class Step:
    """One line of the lifecycle summary."""

    name: str
    job_id: str
    status: str
    figure: str
    seconds: float


@dataclass
class Lifecycle:
    """What the lifecycle produced, for the summary and for tests."""

    steps: list[Step] = field(default_factory=list)
    student_exact_match: float | None = None
    base_exact_match: float | None = None
    answer: str | None = None
    deployments: list[str] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Each job's estimate, asked right after submission from the spec it was stored with.
    estimates: dict[str, CostEstimate] = field(default_factory=dict)
    bill: BillingSummary | None = None
    pipeline: Pipeline | None = None
    # Where the deployed student came from, walked up to the raw data.
    lineage: Lineage | None = None


class LifecycleError(RuntimeError):
    """A lifecycle job did not complete; the message says which and why."""


# What each lifecycle step's summary line shows of its outputs.
FIGURES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "train-teacher": lambda r: f"loss {r.get('final_loss', 0):.3f}",
    "deploy-teacher": lambda r: str(r.get("deployment_id")),
    "generate": lambda r: f"{r.get('num_samples')} samples",
    "audit": lambda r: f"mean score {r.get('mean_score', 0):.2f}, {r.get('exact_duplicates', 0)} duplicates",
    "distill": lambda r: f"{r.get('num_samples')} samples",
    "train-student": lambda r: f"loss {r.get('final_loss', 0):.3f}",
    "evaluate": lambda r: (
        f"exact match {r['scores']['exact_match']:.2f} (base {(r.get('base_scores') or {}).get('exact_match', 0):.2f})"
    ),
    "deploy-student": lambda r: str(r.get("deployment_id")),
}


def lifecycle_file() -> Path:
    """``examples/pipeline-lifecycle.yaml``: packaged with the wheel, or read from the checkout."""
    packaged = Path(__file__).resolve().parent.parent / "examples" / LIFECYCLE_FILE
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[3] / "examples" / LIFECYCLE_FILE


def _wait_quietly(client: NexaClient, pipeline_id: str) -> Pipeline:
    return client.wait_pipeline(pipeline_id, timeout=3600.0, poll_interval=0.5, until_waiting=False)


def _record(client: NexaClient, run: Lifecycle, pipeline: Pipeline) -> None:
    """The pipeline's steps as summary lines, their estimates, and the servers to stop."""
    for step in pipeline.steps:
        outputs = step.outputs or {}
        seconds = (
            (step.finished_at - step.started_at).total_seconds()
            if step.started_at and step.finished_at
            else 0.0
        )
        done = step.status in (StepState.completed, StepState.cached)
        figure = FIGURES[step.name](outputs) if done and step.name in FIGURES else (step.reason or "")
        run.steps.append(
            Step(step.name.replace("-", " "), step.job_id or "", step.status.value, figure, seconds)
        )
        if step.type is JobType.deploy and outputs.get("deployment_id"):
            run.deployments.append(str(outputs["deployment_id"]))
        if step.job_id and step.status is not StepState.cached:
            try:
                estimate = client.job_cost(step.job_id).estimate
            except NexaError:
                estimate = None  # an older gateway without estimates: the bill still shows what was charged
            if estimate is not None:
                run.estimates[step.job_id] = estimate
    run.pipeline = pipeline


def run_lifecycle(
    client: NexaClient,
    scratch: Path,
    *,
    max_steps: int | None = None,
    follow: Callable[[NexaClient, str], Pipeline] = _wait_quietly,
    say: Callable[[str], None] = lambda _line: None,
) -> Lifecycle:
    """The lifecycle pipeline (``examples/pipeline-lifecycle.yaml``) on tiny local models against
    ``client``, then a question to the deployed student; raises ``LifecycleError`` when it fails."""
    try:
        import openai
        import pyarrow as pa
        import pyarrow.parquet as pq
        from transformers.utils import logging as hf_logging

        from nexa_engines.models import tiny
    except ImportError as exc:
        raise CliError(
            f"the lifecycle demo needs the ML engines ({exc}): pip install 'nexa-forge[ml]'"
        ) from exc

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the summary table is the demo's output, not weight-saving bars
    run = Lifecycle()
    rows = tiny.word_task_rows()
    corpus = tiny.word_task_corpus(rows)

    started = time.monotonic()
    say("building the tiny teacher and student base models (local, nothing downloaded)")
    teacher_base = tiny.build_tiny_model(scratch / "teacher-base", corpus, tiny.STUDENT)
    student_base = tiny.build_tiny_model(scratch / "student-base", corpus, tiny.STUDENT)
    truth = scratch / "word-tasks.parquet"
    pq.write_table(pa.Table.from_pylist(rows), truth)
    prompts = scratch / "word-prompts.parquet"
    pq.write_table(pa.table({"prompt": [r["instruction"] for r in rows]}), prompts)
    truth_ds = client.upload_dataset(truth, name="demo-word-tasks")
    prompts_ds = client.upload_dataset(prompts, name="demo-word-prompts")
    run.steps.append(
        Step(
            "prepare data", truth_ds.dataset_id, "completed", f"{len(rows)} rows", time.monotonic() - started
        )
    )
    spec = load_pipeline(
        lifecycle_file(),
        {
            "truth_dataset": truth_ds.dataset_id,
            "prompts_dataset": prompts_ds.dataset_id,
            "teacher_base": str(teacher_base),
            "student_base": str(student_base),
            "max_steps": str(max_steps or tiny.STUDENT_MAX_STEPS),
        },
    )
    submitted = client.pipeline(spec)
    say(f"submitted the lifecycle as pipeline {submitted.pipeline_id} ({len(spec.steps)} steps)")
    try:
        try:
            final = follow(client, submitted.pipeline_id)
        except BaseException:
            # Interrupted or timed out: stop the pipeline, and still stop the servers it started.
            with contextlib.suppress(NexaError):
                client.cancel_pipeline(submitted.pipeline_id)
            with contextlib.suppress(NexaError):
                _record(client, run, client.get_pipeline(submitted.pipeline_id))
            raise
        _record(client, run, final)
        if final.status is not PipelineState.completed:
            error = final.error
            detail = f"{error.code}: {error.message}" if error is not None else final.status.value
            raise LifecycleError(f"pipeline {final.pipeline_id} ended {final.status.value}: {detail}")
        outputs = {s.name: s.outputs or {} for s in final.steps}
        scores = outputs["evaluate"]
        run.student_exact_match = float(scores["scores"]["exact_match"])
        run.base_exact_match = float((scores.get("base_scores") or {}).get("exact_match", 0.0))
        student_dp = outputs["deploy-student"]
        try:
            run.lineage = client.lineage(str(student_dp["deployment_id"]), direction="up", depth=20)
        except NexaError:
            run.lineage = None  # an older gateway: the demo's summary does without the tree

        started = time.monotonic()
        question = "What is the opposite of hot?"
        # The endpoint takes the tenant's own API key (checked with the gateway) or its endpoint key.
        with openai.OpenAI(
            base_url=student_dp["openai_base_url"], api_key=client.api_key, timeout=60.0
        ) as oai:
            reply = oai.chat.completions.create(
                model=student_dp["model_name"],
                messages=[{"role": "user", "content": question}],
                max_tokens=8,
                temperature=0.0,
            )
        run.answer = (reply.choices[0].message.content or "").strip()
        run.steps.append(
            Step(
                "openai completion",
                str(student_dp["deployment_id"]),
                "completed",
                f"{question} -> {run.answer}",
                time.monotonic() - started,
            )
        )
    finally:
        started = time.monotonic()
        for deployment_id in run.deployments:
            client.undeploy(deployment_id)
        stopped = _wait_stopped(client, run.deployments, timeout=60.0)
        run.steps.append(
            Step(
                "undeploy",
                id_cell(run.deployments),
                "completed" if stopped else "stopping",
                f"{len(run.deployments)} servers stopped" if stopped else "still stopping",
                time.monotonic() - started,
            )
        )
        try:
            run.bill = client.billing_summary(start=run.started_at)
        except NexaError:
            run.bill = None
    return run


def _money(amount: Decimal | None) -> str:
    if amount is None:
        return "-"
    return (
        f"${amount:,.2f}"
        if amount == amount.quantize(Decimal("0.01")) or amount >= 1
        else f"${amount:.6f}".rstrip("0")
    )


def _quantity(value: Decimal) -> str:
    """A usage quantity as a reader takes it in: whole numbers with separators, others to 4 figures."""
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{float(value):.4g}"


def bill_rows(run: Lifecycle) -> list[tuple[str, str, str, str, str]]:
    """(step, job, usage, charge, estimate) for every lifecycle job, from the bill and the estimates."""
    charged = {j.job_id: j for j in (run.bill.by_job if run.bill else [])}
    rows = []
    for step in run.steps:
        if not step.job_id.startswith("job_"):
            continue
        job = charged.get(step.job_id)
        usage = ", ".join(f"{_quantity(line.quantity)} {line.kind}" for line in job.lines) if job else ""
        estimate = run.estimates.get(step.job_id)
        guess = "-"
        if estimate is not None:
            guess = _money(estimate.total) + ("" if estimate.complete else " + what it cannot know")
            if any(line.kind == "deployment_hours" for line in estimate.lines):
                guess = f"{_money(estimate.total)} per month of serving"
            # Machine time is shown as time too: the SPEC does not price CPU-hours.
            for line in estimate.lines:
                if line.kind in ("gpu_hours", "cpu_hours") and line.quantity is not None:
                    guess += f" ({_quantity(line.quantity)} {line.kind})"
        if step.name.startswith("deploy") and not any(
            line.kind == "deployment_hours" for line in (job.lines if job else [])
        ):
            usage = ", ".join(filter(None, [usage, "serving time: charged once it stops"]))
        rows.append((step.name, step.job_id, usage or "-", _money(job.amount if job else Decimal(0)), guess))
    return rows


def bill_table(run: Lifecycle) -> Table:
    """The lifecycle's bill: per step, what was used, what it cost, and what was estimated before."""
    total = sum(
        (
            j.amount
            for j in (run.bill.by_job if run.bill else [])
            if any(j.job_id == s.job_id for s in run.steps)
        ),
        Decimal(0),
    )
    book = run.bill.price_book if run.bill else "-"
    table = Table(
        title=f"bill (price book {book}): {_money(total)}",
        title_justify="left",
        show_edge=False,
        header_style="bold",
    )
    table.add_column("STEP", ratio=1)
    table.add_column("JOB", no_wrap=True, min_width=30)
    table.add_column("USAGE", ratio=2)
    table.add_column("CHARGE", justify="right", no_wrap=True)
    table.add_column("ESTIMATE", justify="right", ratio=1)
    for row in bill_rows(run):
        table.add_row(*(escape(cell) for cell in row))
    return table


def _wait_stopped(client: NexaClient, deployment_ids: list[str], *, timeout: float) -> bool:
    """True once every deployment reports ``stopped`` (its serving process has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(client.get_deployment(d).status == "stopped" for d in deployment_ids):
            return True
        time.sleep(0.5)
    return False


def id_cell(ids: list[str]) -> str:
    """Several ids for one summary cell: one a line, so the column stays one id wide."""
    return "\n".join(ids)


def lifecycle_table(run: Lifecycle) -> Table:
    """Step, job id, status, key figure and seconds for every lifecycle step."""
    table = Table(title="lifecycle summary", title_justify="left", show_edge=False, header_style="bold")
    # Ids, statuses and seconds never wrap or shrink; the step and the figure wrap, so
    # the table stays readable in an 80-column terminal or a CI log.
    table.add_column("STEP", ratio=1)
    table.add_column("JOB / ARTIFACT", no_wrap=True, min_width=30)
    table.add_column("STATUS", no_wrap=True, min_width=9)
    table.add_column("KEY FIGURE", ratio=2)
    table.add_column("SECONDS", justify="right", no_wrap=True, min_width=7)
    for step in run.steps:
        table.add_row(step.name, step.job_id, step.status, escape(step.figure), f"{step.seconds:.1f}")
    return table


@handle_errors
def demo(
    rows: Annotated[
        int, typer.Option("--rows", min=100, max=1_000_000, help="Rows in the sample dataset (at least 100).")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample dataset.")] = 7,
    audit_only: Annotated[
        bool, typer.Option("--audit-only", help="Stop after the audit part (skip the model lifecycle).")
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Training steps for the teacher and the student.")
    ] = None,
    mesh: Annotated[
        bool,
        typer.Option(
            "--mesh",
            help="Instead: start three nodes with pinned tiers, run a verified audit on them and print the "
            "leaderboard (docs/mesh.md).",
        ),
    ] = False,
) -> None:
    """Audit a sample dataset, then generate, distill, train, evaluate and deploy tiny models."""
    started = time.monotonic()
    if mesh:
        with (
            tempfile.TemporaryDirectory(prefix="nexa-demo-data-") as scratch,
            temporary_nexa(
                "nexa-mesh-demo-", "starting a temporary Nexa with three nodes...", MESH_TIERS
            ) as client,
        ):
            run_mesh(client, Path(scratch), min(rows, 2000), seed)
        console.print(f"mesh demo done in {time.monotonic() - started:.0f} s")
        return
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
        if audit_only:
            return
        console.rule("model lifecycle")

        def follow(c: NexaClient, pipeline_id: str) -> Pipeline:
            return follow_pipeline(c, pipeline_id, timeout=3600.0, poll_interval=0.5)

        try:
            run = run_lifecycle(client, Path(scratch), max_steps=max_steps, follow=follow, say=console.print)
        except LifecycleError as exc:
            err_console.print(f"[red]{escape(str(exc))}[/]")
            raise typer.Exit(EXIT_FAILURE) from exc
        console.print(lifecycle_table(run))
        if run.lineage is not None:
            console.print(
                "where the deployed student came from ([bold]nexa lineage[/] draws this for any artifact):"
            )
            console.print(lineage_tree(run.lineage))
        if run.bill is not None:
            console.print(bill_table(run))
        if run.student_exact_match is not None:
            console.print(
                f"held-out exact match: student {run.student_exact_match:.0%}, untrained base {run.base_exact_match:.0%}; "
                f"total {time.monotonic() - started:.0f} s"
            )
