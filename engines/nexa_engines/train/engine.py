"""The train engine: causal-LM SFT (full or LoRA) with packing, checkpoints, resume and metrics.

Flow: fetch the dataset, hold out an evaluation split (a ``ds_…`` artifact),
resolve the base model (a local base model directory is registered as a
``ckpt_…`` base checkpoint so later jobs can name it), resume from this job's
newest checkpoint if an earlier attempt left one, train, and commit the final
checkpoint with ``metrics.jsonl`` and ``loss_curve.png``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nexa.contracts import InputSource, TrainSpec
from nexa.contracts.refs import artifact_ref_uri
from nexa.ids import new_id
from nexa_engines.engine import EngineContext, EngineError, JobCancelled
from nexa_engines.models.loading import ResolvedModel, load_model, load_tokenizer, resolve_model
from nexa_engines.models.runtime import configure_threads, pick_device, seed_everything
from nexa_engines.train import deepspeed_support
from nexa_engines.train.checkpoints import TRAINER_STATE, commit_checkpoint, job_checkpoints, latest_resumable
from nexa_engines.train.data import read_table, sft_pairs, split_holdout, tokenize_pairs
from nexa_engines.train.plot import loss_curve_png
from nexa_engines.train.trainer import LoopConfig, Trainer, make_units
from nexa_store.datasets import DatasetRefError, fetch_dataset

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE = "loss_curve.png"


def _copy_model_dir(source: Path, dest: Path) -> None:
    for item in source.iterdir():
        if item.name == "manifest.json" or item.name.startswith("."):
            continue
        if item.is_file():
            shutil.copy2(item, dest / item.name)


def _register_base(ctx: EngineContext, resolved: ResolvedModel) -> str:
    """A local model directory becomes a base checkpoint, so evaluate and deploy can name it by id."""

    def fill(path: Path) -> None:
        _copy_model_dir(Path(resolved.source), path)

    checkpoint_id = commit_checkpoint(
        ctx,
        fill,
        step=0,
        final=False,
        config={"base": True, "source": resolved.reference},
        metrics={},
        inputs=[InputSource(uri=resolved.reference)],
    )
    ctx.log(f"registered base model {resolved.reference} as checkpoint {checkpoint_id}")
    return checkpoint_id


def _commit_holdout(ctx: EngineContext, rows: list[tuple[str, str]], source: str) -> str:
    dataset_id = new_id("ds")
    with ctx.store.begin("dataset", dataset_id) as writer:
        table = pa.table({"instruction": [r[0] for r in rows], "response": [r[1] for r in rows]})
        pq.write_table(table, writer.path / "data.parquet")
        writer.commit(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            tenant_id=ctx.tenant_id,
            pipeline_id=ctx.pipeline_id,
            inputs=[InputSource(uri=source)],
            config={"role": "holdout"},
            metrics={"num_rows": len(rows), "columns": ["instruction", "response"]},
        )
    ctx.produced_artifacts.append(dataset_id)
    return dataset_id


def _apply_lora(model: Any, spec: TrainSpec) -> Any:
    from peft import LoraConfig, get_peft_model

    assert spec.lora is not None
    config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=spec.lora.target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _save_weights(model: Any, tokenizer: Any, path: Path, trainer: Trainer) -> None:
    if trainer.engine is not None:
        state = deepspeed_support.full_state_dict(trainer.engine)
        model.save_pretrained(path, state_dict=state)
    else:
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _eta(started: float, done: int, total: int, first_step: int) -> str:
    ran = done - first_step
    if ran <= 0:
        return "?"
    seconds = (time.monotonic() - started) / ran * (total - done)
    return f"{seconds:.0f}s"


def run(ctx: EngineContext, spec: TrainSpec) -> dict[str, Any]:
    """Fine-tune ``spec.model`` on ``spec.dataset_id``; commit checkpoints; return the SPEC result."""
    if not isinstance(spec, TrainSpec):
        spec = TrainSpec.model_validate(spec)
    hp = spec.hyperparameters
    threads = configure_threads()
    device = pick_device()
    seed_everything(hp.seed)
    ctx.log(f"device: {device.note}; torch threads: {threads}")
    use_deepspeed = spec.deepspeed_stage > 0 and device.is_cuda
    if spec.deepspeed_stage > 0 and not device.is_cuda:
        ctx.log(f"DeepSpeed ZeRO-{spec.deepspeed_stage} skipped: no CUDA device; training with plain PyTorch")
    ctx.progress(0.01, "reading the dataset")
    try:
        dataset = fetch_dataset(spec.dataset_id, store=ctx.store, access=ctx.access, workdir=ctx.workdir)
    except DatasetRefError as exc:
        raise EngineError(exc.code, exc.message) from exc
    pairs = sft_pairs(read_table(dataset.path, dataset.format))
    if not pairs:
        raise EngineError(
            "dataset_empty", f"{spec.dataset_id} has no rows with both an instruction and a response"
        )
    train_pairs, holdout = split_holdout(pairs, spec.holdout_fraction, hp.seed)
    holdout_id = _commit_holdout(ctx, holdout, dataset.uri) if holdout else None

    ctx.progress(0.03, "loading the model")
    if spec.model is None:
        # The gateway fills in its default model; a NexaJob applied with kubectl must name one.
        raise EngineError("model_required", "the request names no base model: set 'model'")
    base = resolve_model(spec.model, store=ctx.store, workdir=ctx.workdir, access=ctx.access)
    trained_from = base.reference
    if base.checkpoint_id is None and Path(base.source).is_dir():
        trained_from = _register_base(ctx, base)
    start = base
    if spec.warm_start_checkpoint_id:
        start = resolve_model(
            spec.warm_start_checkpoint_id,
            store=ctx.store,
            workdir=ctx.workdir,
            access=ctx.access,
        )
        ctx.log(f"warm start from {spec.warm_start_checkpoint_id}")
    resume = latest_resumable(ctx.store, ctx.job_id)
    resume_state: dict[str, Any] | None = None
    if resume is not None and resume.step > 0:
        ctx.log(
            f"resuming from checkpoint {resume.checkpoint_id} at step {resume.step} (attempt {resume.attempt})"
        )
        resumed = resolve_model(resume.checkpoint_id, store=ctx.store, workdir=ctx.workdir, access=ctx.access)
        # weights_only: a trainer state another worker wrote is data, never code to run.
        resume_state = torch.load(Path(resumed.source) / TRAINER_STATE, map_location="cpu", weights_only=True)
        start = resumed

    tokenizer = load_tokenizer(start)
    lora = spec.lora is not None
    continuing_adapter = lora and start.is_adapter
    model = load_model(start, dtype=torch.float32, trainable_adapter=continuing_adapter)
    if lora and not continuing_adapter:
        model = _apply_lora(model, spec)
    # An adapter applies to the weights it was trained on: the start model, or the adapter's own base.
    adapter_base = (
        str(start.config.get("base_model")) if continuing_adapter else (start.checkpoint_id or trained_from)
    )
    if lora and not (adapter_base.startswith("ckpt_") or not Path(adapter_base).is_absolute()):
        raise EngineError("model_not_registered", "LoRA needs a base that later jobs can load by id")
    model.to(device.torch_device)
    if resume_state is None:
        seed_everything(hp.seed)

    examples = tokenize_pairs(tokenizer, train_pairs, hp.max_seq_len)
    if not examples:
        raise EngineError(
            "dataset_empty", "no example has a response token left after truncation to max_seq_len"
        )
    units = make_units(examples, hp.packing, hp.max_seq_len, tokenizer.pad_token_id)
    config = LoopConfig(
        learning_rate=hp.learning_rate,
        batch_size=hp.batch_size,
        grad_accum=hp.gradient_accumulation_steps,
        max_seq_len=hp.max_seq_len,
        warmup_ratio=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        packing=hp.packing,
        seed=hp.seed,
        epochs=spec.epochs,
        checkpoint_every=spec.checkpoint_every_steps,
        max_steps=spec.max_steps,
    )
    trainer = Trainer(model, units, config, device)
    if use_deepspeed:
        ds_config = deepspeed_support.zero_config(
            spec.deepspeed_stage,
            hp.batch_size,
            hp.gradient_accumulation_steps,
            device.dtype == torch.bfloat16,
        )
        trainer.use_deepspeed(deepspeed_support.wrap(model, trainer.optimizer, trainer.scheduler, ds_config))
        ctx.log(
            f"DeepSpeed ZeRO-{spec.deepspeed_stage} enabled: {json.dumps(ds_config['zero_optimization'])}"
        )
    if resume_state is not None:
        trainer.load_trainer_state(resume_state)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ctx.log(
        f"training {'LoRA adapters' if lora else 'all weights'}: {n_train:,} of {n_params:,} parameters; "
        f"{len(examples)} examples in {len(units)} {'packed rows' if hp.packing else 'rows'}; "
        f"{trainer.total_steps} steps"
    )
    inputs = [
        InputSource(uri=dataset.uri, sha256=dataset.sha256, artifact_id=dataset.artifact_id),
        # The weights it started from: a base (a registered `ckpt_…` or a hub name) or a warm start.
        InputSource(uri=f"model:{start.checkpoint_id or trained_from}"),
    ]
    checkpoint_config = {
        "base_model": adapter_base if lora else trained_from,
        "trained_from": trained_from,
        "lora": lora,
        "dataset_id": spec.dataset_id,
        "holdout_dataset_id": holdout_id,
        "hyperparameters": hp.model_dump(),
        "epochs": spec.epochs,
    }
    metrics_path = ctx.workdir / METRICS_FILE
    if resume_state is not None:
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in trainer.state.history))
    first_step = trainer.state.step
    started = time.monotonic()
    # Machine time is metered as it is spent (wall time x devices), so the usage reported with each
    # progress report is the attempt's so far and the gateway can stop it at its budget.
    machine_kind = "gpu_hours" if device.is_cuda else "cpu_hours"
    devices = torch.cuda.device_count() if device.is_cuda else threads
    metered = {"until": started, "hours": 0.0}

    def meter() -> None:
        now = time.monotonic()
        hours = (now - metered["until"]) / 3600 * devices
        metered["until"], metered["hours"] = now, metered["hours"] + hours
        ctx.usage(machine_kind, hours)

    def on_metrics(line: dict[str, Any]) -> None:
        meter()
        with metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        done = line["step"]
        eta = _eta(started, done, trainer.total_steps, first_step)
        ctx.progress(
            0.05 + 0.9 * done / trainer.total_steps,
            f"step {done}/{trainer.total_steps} loss {line['loss']:.4f} eta {eta}",
        )
        ctx.log(
            f"step {done}/{trainer.total_steps} loss {line['loss']:.4f} lr {line['lr']:.2e} "
            f"tok/s {line['tokens_per_s']} waste {line['padding_waste']:.3f} eta {eta}"
        )

    def on_checkpoint(step: int, line: dict[str, Any]) -> None:
        def fill(path: Path) -> None:
            _save_weights(model, tokenizer, path, trainer)
            torch.save(trainer.trainer_state(), path / TRAINER_STATE)

        checkpoint_id = commit_checkpoint(
            ctx,
            fill,
            step=step,
            final=False,
            config=checkpoint_config,
            metrics={"loss": line["loss"]},
            inputs=inputs,
        )
        ctx.log(f"checkpoint {checkpoint_id} at step {step}")

    try:
        summary = trainer.run(
            on_metrics=on_metrics, on_checkpoint=on_checkpoint, check_cancelled=ctx.check_cancelled
        )
    except JobCancelled:
        meter()
        reason = ctx.stop_reason()
        if reason is not None and trainer.state.step > first_step:
            # The platform stopped it (a budget): keep the work paid for as a resumable checkpoint.
            last = trainer.state.history[-1] if trainer.state.history else {"loss": None}
            on_checkpoint(trainer.state.step, last)
            ctx.log(
                f"{reason}: stopped at step {trainer.state.step}/{trainer.total_steps}; the checkpoint is kept: "
                "name it as warm_start_checkpoint_id to go on"
            )
        raise
    meter()
    gpu_hours = metered["hours"] if device.is_cuda else 0.0
    cpu_hours = 0.0 if device.is_cuda else metered["hours"]

    ctx.progress(0.97, "saving the final checkpoint")
    history = trainer.state.history

    def fill_final(path: Path) -> None:
        _save_weights(model, tokenizer, path, trainer)
        shutil.copy2(metrics_path, path / METRICS_FILE)
        loss_curve_png(path / LOSS_CURVE, [h["step"] for h in history], [h["loss"] for h in history])

    final_metrics = {k: v for k, v in summary.items() if v is not None}
    checkpoint_id = commit_checkpoint(
        ctx,
        fill_final,
        step=trainer.state.step,
        final=True,
        config=checkpoint_config,
        metrics=final_metrics,
        inputs=inputs,
    )
    uri = artifact_ref_uri(checkpoint_id)  # never a server path: users download through the API
    listed = [c.as_dict() for c in job_checkpoints(ctx.store, ctx.job_id) if c.step > 0]
    ctx.log(f"final checkpoint {checkpoint_id}: loss {summary['final_loss']}, {summary['steps']} steps")
    return {
        "checkpoint_id": checkpoint_id,
        "checkpoint_uri": uri,
        "train_metrics_uri": f"{uri}/{METRICS_FILE}",
        "loss_curve_uri": f"{uri}/{LOSS_CURVE}",
        "gpu_hours": round(gpu_hours, 6),
        "cpu_hours": round(cpu_hours, 6),
        "base_model": trained_from,
        "holdout_dataset_id": holdout_id,
        "checkpoints": listed,
        "resumed_from_step": first_step or None,
        "device": device.note,
        "deepspeed": f"ZeRO-{spec.deepspeed_stage}"
        if use_deepspeed
        else ("skipped: no CUDA device" if spec.deepspeed_stage else "off"),
        "lora": lora,
        **summary,
        "steps_total": trainer.total_steps,
    }
