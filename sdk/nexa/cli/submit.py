"""One command per job type: ``nexa audit``, ``distill``, ``generate``, ``train``, ``evaluate``, ``deploy``, ``container``.

Each builds the job's spec from its options, validates it against the contract
before sending (so a bad value is named without a round trip), submits it, and
with ``--wait`` follows it with a progress bar and exits non-zero unless it completed.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nexa.cli.context import EXIT_FAILURE, CliError, handle_errors, make_client, parse_pairs
from nexa.cli.render import console, follow_job, print_json, print_outcome
from nexa.contracts import JobState, JobType, spec_for

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


@handle_errors
def audit(
    dataset_uri: Annotated[
        str, typer.Argument(help="A ds_… id, an s3:// URI, or a local path under an allowed root.")
    ],
    text_column: Annotated[
        list[str] | None,
        typer.Option("--text-column", help="Column holding text (repeatable); detected when unset."),
    ] = None,
    near_dup_threshold: Annotated[
        float | None,
        typer.Option("--near-dup-threshold", help="Similarity above which rows are near duplicates."),
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
    """Score a dataset's quality: heuristics, duplicates, near duplicates."""
    fields = {
        "dataset_uri": dataset_uri,
        "text_columns": text_column or None,
        "near_dup_threshold": near_dup_threshold,
    }
    _run(
        JobType.audit,
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


@handle_errors
def distill(
    dataset_id: Annotated[str, typer.Argument(help="Prompt dataset (ds_… id or URI).")],
    teacher: Annotated[
        str, typer.Option("--teacher", help="Teacher: provider/model, a dp_… deployment, or a path.")
    ],
    teacher_base_url: Annotated[
        str | None, typer.Option("--teacher-base-url", help="OpenAI-compatible endpoint root.")
    ] = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples")] = None,
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
    """Turn a prompt dataset into an SFT dataset with a teacher model."""
    fields = {
        "dataset_id": dataset_id,
        "teacher": teacher,
        "teacher_base_url": teacher_base_url,
        "max_samples": max_samples,
    }
    _run(
        JobType.distill,
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


@handle_errors
def generate(
    domain: Annotated[str, typer.Option("--domain", help="Subject area of the data.")],
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher model.")],
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="How many samples.")] = 100,
    teacher_base_url: Annotated[str | None, typer.Option("--teacher-base-url")] = None,
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
    """Produce synthetic instruction data for a domain."""
    fields = {
        "domain": domain,
        "num_samples": num_samples,
        "teacher": teacher,
        "teacher_base_url": teacher_base_url,
    }
    _run(
        JobType.generate,
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


@handle_errors
def train(
    dataset_id: Annotated[str, typer.Argument(help="SFT dataset (ds_… id or URI).")],
    model: Annotated[
        str, typer.Option("--model", help="Base model: a Hugging Face id, a path, or a ckpt_… id.")
    ],
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data.")] = 1,
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters instead of all weights.")] = False,
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
    """Fine-tune a causal language model on an SFT dataset."""
    fields: dict[str, Any] = {
        "dataset_id": dataset_id,
        "model": model,
        "epochs": epochs,
        "lora": {} if lora else None,
    }
    _run(
        JobType.train,
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


@handle_errors
def evaluate(
    checkpoint_id: Annotated[str, typer.Argument(help="Checkpoint to evaluate (ckpt_…).")],
    dataset_id: Annotated[
        str | None, typer.Option("--dataset", help="Evaluation data; the hold-out when unset.")
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
    """Evaluate a checkpoint."""
    fields = {"checkpoint_id": checkpoint_id, "dataset_id": dataset_id}
    _run(
        JobType.evaluate,
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


@handle_errors
def deploy(
    checkpoint_id: Annotated[str, typer.Argument(help="Checkpoint to serve (ckpt_…).")],
    replicas: Annotated[int | None, typer.Option("--replicas")] = None,
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
    """Serve a checkpoint behind an OpenAI-compatible and OIP v2 endpoint."""
    fields = {"checkpoint_id": checkpoint_id, "replicas": replicas}
    _run(
        JobType.deploy,
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
        app.command(fn.__name__)(fn)


__all__ = ["COMMANDS", "CliError", "build_spec", "register", "submit_and_report"]
