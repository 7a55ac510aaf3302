"""One command per job type: ``nexa audit``, ``distill``, ``generate``, ``train``, ``evaluate``, ``deploy``, ``container``.

Each builds the job's spec from its options, validates it against the contract
before sending (so a bad value is named without a round trip), submits it, and
with ``--wait`` follows it with a progress bar and exits non-zero unless it completed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from nexa.cli.context import EXIT_FAILURE, CliError, handle_errors, make_client, parse_pairs
from nexa.cli.options import assemble, contract_options, with_signature
from nexa.cli.render import console, follow_job, print_json, print_outcome
from nexa.contracts import JobState, JobType, spec_for
from nexa.contracts.common import JobOptions
from nexa.contracts.jobs import JOB_SPECS

LabelOpt = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="Label KEY=VALUE (repeatable); filter with `nexa jobs list --label`."),
]
PriorityOpt = Annotated[int, typer.Option("--priority", help="Higher runs first (-100..100).")]
GpusOpt = Annotated[int, typer.Option("--gpus", help="GPUs the job needs.")]
GpuTypeOpt = Annotated[str | None, typer.Option("--gpu-type", help="GPU model, e.g. H100; any when unset.")]
TierOpt = Annotated[str | None, typer.Option("--tier", help="Worker tier, e.g. cpu or gpu.")]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait", "-w", help="Follow the job until it ends; exit non-zero unless it completed."),
]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="With --wait: give up waiting after this many seconds.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the job as JSON.")]
IdemOpt = Annotated[
    str | None, typer.Option("--idempotency-key", help="A repeat with the same key returns the first job.")
]
RetriesOpt = Annotated[
    int | None, typer.Option("--max-retries", help="Attempts after the first on retryable failures.")
]


def build_spec(
    job_type: JobType,
    fields: dict[str, Any],
    *,
    labels: list[str] | None,
    priority: int,
    gpus: int,
    gpu_type: str | None,
    tier: str | None,
    max_retries: int | None,
) -> dict[str, Any]:
    """The spec as JSON, validated against the job type's contract (pydantic error names the field)."""
    spec: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    resources: dict[str, Any] = {}
    if gpus:
        resources["gpus"] = gpus
    if gpu_type:
        resources["gpu_type"] = gpu_type
    if tier:
        resources["tier"] = tier
    if resources:
        spec["resources"] = resources
    parsed_labels = parse_pairs(labels, "--label")
    if parsed_labels:
        spec["labels"] = parsed_labels
    if priority:
        spec["priority"] = priority
    if max_retries is not None:
        spec["max_retries"] = max_retries
    model = spec_for(job_type, spec)
    return model.model_dump(mode="json", exclude_unset=True)


def submit_and_report(
    job_type: JobType,
    spec: dict[str, Any],
    *,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    idempotency_key: str | None,
) -> None:
    """Submit; print the job (or follow it with ``wait``); exit 1 when a waited job did not complete."""
    with make_client() as client:
        handle = client.submit(job_type, spec, idempotency_key=idempotency_key)
        if not wait:
            if as_json:
                print_json(handle.to_dict())
            else:
                console.print(
                    f"submitted {job_type.value} job [bold]{handle.job_id}[/] ({handle.status.value})"
                )
                console.print(
                    f"  follow it: nexa jobs wait {handle.job_id}    logs: nexa jobs logs {handle.job_id} -f"
                )
            return
        final = follow_job(client, handle.job_id, timeout=timeout, stderr=as_json)
        if as_json:
            print_json(final.to_dict())
        else:
            print_outcome(final.model)
        if final.status is not JobState.completed:
            raise typer.Exit(EXIT_FAILURE)


def _run(
    job_type: JobType,
    fields: dict[str, Any],
    *,
    label: list[str] | None,
    priority: int,
    gpus: int,
    gpu_type: str | None,
    tier: str | None,
    max_retries: int | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    idempotency_key: str | None,
) -> None:
    spec = build_spec(
        job_type,
        fields,
        labels=label,
        priority=priority,
        gpus=gpus,
        gpu_type=gpu_type,
        tier=tier,
        max_retries=max_retries,
    )
    submit_and_report(
        job_type, spec, wait=wait, timeout=timeout, as_json=as_json, idempotency_key=idempotency_key
    )


# The generic options every submission takes, as keyword parameters of the generated commands.
GENERIC: list[inspect.Parameter] = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, annotation, default in (
        ("label", LabelOpt, None),
        ("priority", PriorityOpt, 0),
        ("gpus", GpusOpt, 0),
        ("gpu_type", GpuTypeOpt, None),
        ("tier", TierOpt, None),
        ("max_retries", RetriesOpt, None),
        ("wait", WaitOpt, False),
        ("timeout", TimeoutOpt, None),
        ("as_json", JsonOpt, False),
        ("idempotency_key", IdemOpt, None),
    )
]
# Fields every job type shares: the generic options above set them (or the API does).
SHARED = set(JobOptions.model_fields)


def contract_command(job_type: JobType, argument: str | None, summary: str) -> Callable[..., None]:
    """The ``nexa <type>`` command: the spec's own fields as options, ``argument`` as the positional one."""
    model = JOB_SPECS[job_type]
    options = contract_options(model, skip=SHARED | ({argument} if argument else set()))
    parameters: list[inspect.Parameter] = []
    if argument is not None:
        info = model.model_fields[argument]
        parameters.append(
            inspect.Parameter(
                argument,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[str, typer.Argument(help=(info.description or argument).strip())],
            )
        )
    parameters += [o.parameter() for o in options] + GENERIC

    def command(**values: Any) -> None:
        fields = assemble(options, values)
        if argument is not None:
            fields[argument] = values[argument]
        _run(
            job_type,
            fields,
            label=values["label"],
            priority=values["priority"],
            gpus=values["gpus"],
            gpu_type=values["gpu_type"],
            tier=values["tier"],
            max_retries=values["max_retries"],
            wait=values["wait"],
            timeout=values["timeout"],
            as_json=values["as_json"],
            idempotency_key=values["idempotency_key"],
        )

    command.__name__ = job_type.value
    command.__doc__ = summary
    return handle_errors(with_signature(command, parameters))


audit = contract_command(
    JobType.audit, "dataset_uri", "Score a dataset's quality: heuristics, duplicates, near duplicates."
)
distill = contract_command(
    JobType.distill, "dataset_id", "Turn a prompt dataset into an SFT dataset with a teacher model."
)
generate = contract_command(JobType.generate, None, "Produce synthetic instruction data for a domain.")
train = contract_command(JobType.train, "dataset_id", "Fine-tune a causal language model on an SFT dataset.")
evaluate = contract_command(
    JobType.evaluate, "checkpoint_id", "Evaluate a checkpoint, against its base by default."
)
deploy = contract_command(
    JobType.deploy, "checkpoint_id", "Serve a checkpoint behind an OpenAI-compatible and OIP v2 endpoint."
)


@handle_errors
def container(
    image: Annotated[str, typer.Argument(help="Container image reference.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command and arguments, after `--`.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="Environment KEY=VALUE (repeatable).")
    ] = None,
    label: LabelOpt = None,
    priority: PriorityOpt = 0,
    gpus: GpusOpt = 0,
    gpu_type: GpuTypeOpt = None,
    tier: TierOpt = None,
    max_retries: RetriesOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
    idempotency_key: IdemOpt = None,
) -> None:
    """Run any image and command (nexa container IMAGE -- CMD ARGS...)."""
    env_vars = parse_pairs(env, "--env")
    fields: dict[str, Any] = {"image": image, "command": list(command or []) or None, "env": env_vars or None}
    _run(
        JobType.container,
        fields,
        label=label,
        priority=priority,
        gpus=gpus,
        gpu_type=gpu_type,
        tier=tier,
        max_retries=max_retries,
        wait=wait,
        timeout=timeout,
        as_json=as_json,
        idempotency_key=idempotency_key,
    )


COMMANDS = (audit, distill, generate, train, evaluate, deploy, container)


def register(app: typer.Typer) -> None:
    """Add the submission commands to ``app``."""
    for fn in COMMANDS:
        app.command(getattr(fn, "__name__", "container"))(fn)


__all__ = ["COMMANDS", "CliError", "build_spec", "register", "submit_and_report"]
