"""Machine time of a training job, estimated before it runs (pure: no I/O; ``estimates`` feeds it).

Two ways, the better one first:

* **Measured.** This tenant's last completed training job of the same base model on the same kind
  of machine (GPU type, or CPU) ran at a known rate: its machine-hours over the tokens it trained.
  The new job's planned tokens times that rate is the estimate.
* **Computed.** Training a dense transformer costs about 6 FLOPs per parameter per token (2 forward,
  4 backward), 4 with LoRA (no weight gradients for the frozen weights). Divided by what one device
  sustains: a GPU's datasheet dense BF16/FP16 peak times the share of it fine-tuning typically
  reaches (``MFU``), or for CPU jobs a per-thread rate, since CPU-hours are metered per thread.

Planned tokens: the dataset's bytes at about four bytes a token, less the held-out share, times the
epochs, and no more than ``max_steps`` optimizer steps of full sequences. Both ways are rough, and
the estimate's ``basis`` says which was used and with what figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

BYTES_PER_TOKEN = 4
FLOPS_PER_PARAM_TOKEN = 6
FLOPS_PER_PARAM_TOKEN_LORA = 4
MFU = 0.35  # the share of peak a fine-tuning run typically sustains
MATMUL_SHARE = 0.5  # of a node's measured matrix-multiply rate: the rest of a training step is not matmul
CPU_FLOPS_PER_THREAD = 20e9  # float32, one thread with FMA vector units, as PyTorch reaches in practice
# Dense (no sparsity) BF16/FP16 tensor peak per device, TFLOP/s, from the vendors' datasheets.
GPU_PEAK_TFLOPS = {
    "A100": 312.0,
    "H100": 989.0,
    "H200": 989.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "A10G": 70.0,
    "V100": 125.0,
    "T4": 65.0,
}
DEFAULT_GPU = "A100"  # a job that names no GPU type is estimated as on an A100 (the SPEC's unit)
_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)\s*([bBmM])(?![A-Za-z])")


def params_from_name(name: str) -> int | None:
    """Parameters a model's name states (``Mistral-7B`` → 7e9, ``pythia-160m`` → 1.6e8), else None."""
    found = _SIZE.findall(name.rsplit("/", 1)[-1])
    if not found:
        return None
    number, unit = found[-1]
    return int(Decimal(number) * (10**9 if unit in "bB" else 10**6))


def planned_tokens(
    dataset_bytes: int,
    *,
    epochs: int,
    holdout_fraction: float,
    max_steps: int | None,
    batch_size: int,
    grad_accum: int,
    max_seq_len: int,
) -> int:
    """Tokens the run will train on, as far as the request and the dataset's size tell."""
    per_epoch = int(dataset_bytes / BYTES_PER_TOKEN * (1 - holdout_fraction))
    tokens = per_epoch * epochs
    if max_steps is not None:
        tokens = min(tokens, max_steps * batch_size * grad_accum * max_seq_len)
    return max(0, tokens)


@dataclass(frozen=True)
class Measured:
    """A finished run of the same model on the same kind of machine: what its tokens took."""

    job_id: str
    tokens: int
    hours: float


@dataclass(frozen=True)
class MachineTime:
    hours: Decimal
    basis: str


def estimate_hours(
    *,
    tokens: int,
    token_basis: str,
    params: int | None,
    params_basis: str,
    lora: bool,
    gpus: int,
    gpu_type: str | None,
    measured: Measured | None,
    probed: tuple[float, str] | None = None,
) -> MachineTime | None:
    """Machine-hours (GPU-hours when ``gpus``, else CPU thread-hours) for ``tokens``; None when unknown."""
    if measured is not None and measured.tokens > 0 and measured.hours > 0:
        rate = measured.hours / measured.tokens
        return MachineTime(
            _hours(tokens * rate),
            f"{tokens:,} tokens ({token_basis}) at the rate job {measured.job_id} of the same model "
            "measured "
            f"({measured.tokens:,} tokens in {measured.hours:.6g} machine-hours)",
        )
    if params is None:
        return None
    per_token = FLOPS_PER_PARAM_TOKEN_LORA if lora else FLOPS_PER_PARAM_TOKEN
    flops = per_token * params * tokens
    if probed is not None:
        # What the nodes that could run it measured themselves (FLOP/s per device, or per CPU thread).
        rate = probed[0] * MATMUL_SHARE
        where = f"{MATMUL_SHARE:g} x {probed[1]}"
    elif gpus:
        device = (gpu_type or DEFAULT_GPU).upper()
        peak = GPU_PEAK_TFLOPS.get(device)
        if peak is None:
            device, peak = DEFAULT_GPU, GPU_PEAK_TFLOPS[DEFAULT_GPU]
        rate = peak * 1e12 * MFU
        where = f"{peak:g} TFLOP/s {device} peak x {MFU:g} utilisation"
    else:
        rate = CPU_FLOPS_PER_THREAD
        where = f"{CPU_FLOPS_PER_THREAD / 1e9:g} GFLOP/s per CPU thread"
    return MachineTime(
        _hours(flops / rate / 3600),
        f"{per_token} FLOPs x {params:,} parameters ({params_basis}) x {tokens:,} tokens ({token_basis}) "
        f"at {where}: a rough figure",
    )


def _hours(value: float) -> Decimal:
    return Decimal(f"{value:.6f}") if value >= 1e-6 else Decimal("0.000001")
