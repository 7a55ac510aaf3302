"""Machine-time estimates of training jobs: pure arithmetic, table-tested."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nexa_gateway.services import machinetime as mt


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("Mistral-7B", 7_000_000_000),
        ("meta-llama/Llama-3.1-8B-Instruct", 8_000_000_000),
        ("llama-3-8b", 8_000_000_000),
        ("EleutherAI/pythia-160m", 160_000_000),
        ("Qwen2.5-0.5B", 500_000_000),
        ("gpt-4", None),
        ("my-model-v1", None),
        ("/models/student", None),
        ("org/7Bench", None),  # a size must stand alone, not open a word
    ],
)
def test_a_models_size_is_read_from_its_name(name: str, params: int | None) -> None:
    assert mt.params_from_name(name) == params


def test_planned_tokens_take_the_holdout_out_and_stop_at_max_steps() -> None:
    common = {"batch_size": 8, "grad_accum": 1, "max_seq_len": 512}
    assert mt.planned_tokens(4_000_000, epochs=3, holdout_fraction=0.0, max_steps=None, **common) == 3_000_000
    assert mt.planned_tokens(4_000_000, epochs=1, holdout_fraction=0.25, max_steps=None, **common) == 750_000
    # 10 steps of 8 sequences of 512 tokens: 40,960 tokens at most, whatever the dataset holds.
    assert mt.planned_tokens(4_000_000, epochs=3, holdout_fraction=0.0, max_steps=10, **common) == 40_960


def test_gpu_hours_follow_six_flops_per_parameter_and_token_at_the_devices_sustained_rate() -> None:
    found = mt.estimate_hours(
        tokens=10_000_000,
        token_basis="t",
        params=7_000_000_000,
        params_basis="p",
        lora=False,
        gpus=1,
        gpu_type="A100",
        measured=None,
    )
    assert found is not None
    expected = 6 * 7e9 * 1e7 / (312e12 * mt.MFU) / 3600
    assert found.hours == Decimal(f"{expected:.6f}")
    assert "312 TFLOP/s A100" in found.basis and "7,000,000,000 parameters" in found.basis
    lora = mt.estimate_hours(
        tokens=10_000_000,
        token_basis="t",
        params=7_000_000_000,
        params_basis="p",
        lora=True,
        gpus=1,
        gpu_type="h100",
        measured=None,
    )
    assert lora is not None and lora.hours < found.hours and "H100" in lora.basis
    unknown_gpu = mt.estimate_hours(
        tokens=1000,
        token_basis="t",
        params=1000,
        params_basis="p",
        lora=False,
        gpus=2,
        gpu_type="Z9000",
        measured=None,
    )
    assert unknown_gpu is not None and "A100" in unknown_gpu.basis


def test_cpu_jobs_are_estimated_per_thread_and_a_measured_rate_wins() -> None:
    cpu = mt.estimate_hours(
        tokens=1_000_000,
        token_basis="t",
        params=1_000_000,
        params_basis="p",
        lora=False,
        gpus=0,
        gpu_type=None,
        measured=None,
    )
    assert cpu is not None and cpu.hours == Decimal(f"{6e12 / mt.CPU_FLOPS_PER_THREAD / 3600:.6f}")
    measured = mt.estimate_hours(
        tokens=2_000,
        token_basis="t",
        params=None,
        params_basis="unknown",
        lora=False,
        gpus=0,
        gpu_type=None,
        measured=mt.Measured("job_abc", tokens=1_000, hours=0.5),
    )
    assert measured is not None and measured.hours == Decimal("1.000000") and "job_abc" in measured.basis
    assert (
        mt.estimate_hours(
            tokens=10,
            token_basis="t",
            params=None,
            params_basis="?",
            lora=False,
            gpus=0,
            gpu_type=None,
            measured=None,
        )
        is None
    )


def test_a_rate_the_nodes_measured_is_used_at_the_share_of_it_training_reaches() -> None:
    found = mt.estimate_hours(
        tokens=1_000_000,
        token_basis="t",
        params=1_000_000,
        params_basis="p",
        lora=False,
        gpus=0,
        gpu_type=None,
        measured=None,
        probed=(25e9, "25 GFLOP/s per CPU thread, the median of 1 node"),
    )
    assert found is not None
    assert found.hours == Decimal(f"{6e12 / (25e9 * mt.MATMUL_SHARE) / 3600:.6f}")
    assert "the median of 1 node" in found.basis
