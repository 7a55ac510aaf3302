"""The train engine on a tiny model: checkpoints, listing, deterministic resume after a crash, LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nexa.contracts import TrainSpec  # noqa: E402
from nexa_engines.engine import JobCancelled  # noqa: E402
from nexa_engines.models.tiny import TinyConfig, build_tiny_model, corpus_for, learnable_rows  # noqa: E402
from nexa_engines.train import run  # noqa: E402
from nexa_engines.train.checkpoints import job_checkpoints  # noqa: E402
from tests.unit.test_engine_fixtures import make_ctx, reporter_of, write_rows  # noqa: E402

TINY = TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, vocab_size=300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("train")
    rows = learnable_rows()[:120]
    data = write_rows(root / "data.parquet", rows)
    base = build_tiny_model(root / "base", corpus_for(rows), TINY)
    return root, data, base


def _spec(data: Path, base: Path, **extra: Any) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "dataset_id": str(data),
            "model": str(base),
            "epochs": 3,
            "max_steps": 6,
            "checkpoint_every_steps": 3,
            "hyperparameters": {"learning_rate": 3e-3, "batch_size": 2, "max_seq_len": 96, "seed": 5},
            **extra,
        }
    )


def _losses(ctx: Any, checkpoint_id: str) -> list[float]:
    text = ctx.store.read_file(checkpoint_id, "metrics.jsonl").decode()
    return [json.loads(line)["loss"] for line in text.splitlines()]


def test_train_checkpoints_and_resume_after_crash_match_an_uninterrupted_run(
    setup: tuple[Path, Path, Path],
) -> None:
    root, data, base = setup
    clean = make_ctx(root / "clean", job_id="job_aaaaaaaaaaaaaaaaaaaaaaaaaa")
    clean.allowed_roots.append(root)
    result = run(clean, _spec(data, base))
    assert result["steps"] == 6 and result["gpu_hours"] == 0.0 and result["cpu_hours"] > 0
    assert [c["step"] for c in result["checkpoints"]] == [3, 6] and result["checkpoints"][-1]["final"]
    files = {f.path for f in clean.store.read_manifest(result["checkpoint_id"]).files}
    assert {"metrics.jsonl", "loss_curve.png", "config.json", "tokenizer.json"} <= files
    assert clean.store.read_file(result["checkpoint_id"], "loss_curve.png")[:4] == b"\x89PNG"
    assert set(clean.produced_artifacts) >= {
        result["checkpoint_id"],
        result["holdout_dataset_id"],
        result["base_model"],
    }
    assert any("eta" in (m or "") for _, m in reporter_of(clean).progress_values)

    crashed = make_ctx(root / "crash", job_id="job_bbbbbbbbbbbbbbbbbbbbbbbbbb", attempt=1)
    crashed.allowed_roots.append(root)
    original_log = crashed.reporter.log

    def crash_after_step_4(line: str) -> None:
        original_log(line)
        if line.startswith("step 4/"):
            crashed.cancel_event.set()

    crashed.reporter.log = crash_after_step_4  # type: ignore[method-assign]
    with pytest.raises(JobCancelled):
        run(
            crashed,
            _spec(
                data,
                base,
                hyperparameters={
                    "learning_rate": 3e-3,
                    "batch_size": 2,
                    "max_seq_len": 96,
                    "seed": 5,
                    "packing": True,
                },
            ),
        )
    retry = make_ctx(root / "crash", job_id="job_bbbbbbbbbbbbbbbbbbbbbbbbbb", attempt=2)
    retry.allowed_roots.append(root)
    resumed = run(retry, _spec(data, base))
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6
    assert _losses(retry, resumed["checkpoint_id"]) == pytest.approx(
        _losses(clean, result["checkpoint_id"]), rel=1e-4
    )
    # The first attempt's step-3 checkpoint stays listed with its attempt, beside the retry's own.
    listed = [(c.step, c.attempt) for c in job_checkpoints(retry.store, retry.job_id) if c.step > 0]
    assert (3, 1) in listed and (6, 2) in listed


def test_lora_checkpoint_holds_an_adapter_on_a_registered_base(setup: tuple[Path, Path, Path]) -> None:
    root, data, base = setup
    ctx = make_ctx(root / "lora", job_id="job_cccccccccccccccccccccccccc")
    ctx.allowed_roots.append(root)
    result = run(ctx, _spec(data, base, lora={"r": 4, "alpha": 8, "dropout": 0.0}))
    manifest = ctx.store.read_manifest(result["checkpoint_id"])
    assert "adapter_config.json" in {f.path for f in manifest.files}
    assert manifest.config["base_model"].startswith("ckpt_") and manifest.config["lora"] is True

    # Deploy keeps a plain Hugging Face copy (SPEC §8.5): the adapter merged into its base,
    # loadable by transformers alone and computing what base + adapter computes.
    from transformers import AutoModelForCausalLM

    from nexa_engines.deploy.export import hf_checkpoint
    from nexa_engines.models.loading import load_model, resolve_model

    deploy = make_ctx(root / "lora", job_id="job_dddddddddddddddddddddddddd")
    deploy.store = ctx.store
    merged_id = hf_checkpoint(deploy, result["checkpoint_id"])
    assert merged_id != result["checkpoint_id"] and deploy.produced_artifacts == [merged_id]
    merged = ctx.store.read_manifest(merged_id)
    names = {f.path for f in merged.files}
    assert "adapter_config.json" not in names and "model.safetensors" in names and "config.json" in names
    assert merged.tenant_id == deploy.tenant_id and merged.config["merged_from"] == result["checkpoint_id"]
    plain = AutoModelForCausalLM.from_pretrained(ctx.store.fetch(merged_id, root / "plain")).eval()
    adapted = load_model(
        resolve_model(result["checkpoint_id"], store=ctx.store, workdir=root / "w", access=deploy.access)
    ).eval()
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, adapted(ids).logits, atol=1e-5)
    # The same attempt run again finds its copy; a full-weights checkpoint is its own copy.
    again = make_ctx(root / "lora", job_id="job_dddddddddddddddddddddddddd")
    again.store = ctx.store
    assert hf_checkpoint(again, result["checkpoint_id"]) == merged_id
    assert hf_checkpoint(again, merged_id) == merged_id


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed ZeRO and bf16 need a CUDA GPU")
def test_deepspeed_zero2_bf16_on_gpu(setup: tuple[Path, Path, Path]) -> None:
    pytest.importorskip("deepspeed")
    root, data, base = setup
    ctx = make_ctx(root / "ds", job_id="job_dddddddddddddddddddddddddd")
    ctx.allowed_roots.append(root)
    result = run(ctx, _spec(data, base, deepspeed_stage=2))
    assert result["deepspeed"] == "ZeRO-2" and result["gpu_hours"] > 0


def test_deepspeed_request_on_cpu_is_skipped_out_loud(setup: tuple[Path, Path, Path]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the DeepSpeed path runs instead")
    root, data, base = setup
    ctx = make_ctx(root / "cpu-ds", job_id="job_eeeeeeeeeeeeeeeeeeeeeeeeee")
    ctx.allowed_roots.append(root)
    result = run(ctx, _spec(data, base, deepspeed_stage=3, max_steps=1))
    assert result["deepspeed"] == "skipped: no CUDA device"
    assert any("DeepSpeed ZeRO-3 skipped" in line for line in reporter_of(ctx).lines)
