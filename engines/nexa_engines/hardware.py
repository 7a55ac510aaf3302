"""This machine's hardware profile, as a worker registers it: CPUs, memory, GPUs and tier."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from nexa.contracts import HardwareProfile


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1024**3)
    except (ValueError, OSError, AttributeError):
        return 1.0


_GPU_MODEL = re.compile(r"\b([A-Z]{1,3}\d{1,4}[A-Z]?)\b")


def gpu_model(name: str) -> str:
    """Short model name ('H100') from nvidia-smi's long one ('NVIDIA H100 80GB HBM3')."""
    match = _GPU_MODEL.search(name)
    return (match.group(1) if match else name.strip())[:64]


def detect_gpus() -> list[str]:
    """Names of the NVIDIA GPUs nvidia-smi reports; empty without nvidia-smi or a driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def detect_hardware() -> HardwareProfile:
    """This machine's CPUs, memory and GPUs, as the gateway matches them against job resources."""
    gpus = detect_gpus()
    return HardwareProfile(
        cpu_count=max(1, min(4096, os.cpu_count() or 1)),
        memory_gb=max(0.01, round(_memory_gb(), 2)),
        gpus=min(64, len(gpus)),
        gpu_type=gpu_model(gpus[0]) if gpus else None,
        tier="gpu" if gpus else "cpu",
    )
