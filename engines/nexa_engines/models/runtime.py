"""Torch settings shared by the ML engines: threads, device, precision, seeding."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def configure_threads() -> int:
    """Use ``NEXA_TORCH_THREADS`` threads, else every core up to 8; returns the number set."""
    wanted = os.environ.get("NEXA_TORCH_THREADS", "").strip()
    count = int(wanted) if wanted.isdigit() and int(wanted) > 0 else min(8, os.cpu_count() or 1)
    torch.set_num_threads(count)
    return count


@dataclass(frozen=True)
class Device:
    """Where a model runs and in which precision."""

    torch_device: torch.device
    dtype: torch.dtype
    note: str

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"


def pick_device(prefer_bf16: bool = True) -> Device:
    """CUDA with bf16 when a GPU is usable, else CPU in float32 (said in ``note``)."""
    if torch.cuda.is_available():
        bf16 = prefer_bf16 and torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(0)
        return Device(
            torch.device("cuda", 0),
            torch.bfloat16 if bf16 else torch.float32,
            f"CUDA ({name}), {'bf16' if bf16 else 'fp32'}",
        )
    return Device(torch.device("cpu"), torch.float32, "CPU, fp32 (bf16 and CUDA paths skipped: no GPU)")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats exactly on the same hardware."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state, to store in a checkpoint."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # Tensors and plain numbers only, so a checkpoint loads with torch.load(weights_only=True):
        # a file another machine wrote never runs code here.
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved."""
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["name"],
            saved["keys"].numpy().astype(np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
