"""This machine's hardware profile, as a worker registers it: CPUs, memory, disk, GPUs and its mesh tier."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float | None = None
    driver: str | None = None


def _number(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_gpus() -> list[Gpu] | None:
    """The GPUs NVML reports (``nvidia-ml-py``, in the ``gpu`` extra); None where it is not installed
    or finds no driver, so the caller asks nvidia-smi instead."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver or no GPU here
        return None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())[:64] or None
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            found.append(
                Gpu(
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_gb=round(total / 1024**3, 1),
                    driver=driver,
                )
            )
        return found
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def detect_gpus() -> list[Gpu]:
    """The NVIDIA GPUs with memory and driver: from NVML where ``nvidia-ml-py`` is installed, else from
    nvidia-smi; empty without either or without a driver."""
    from_nvml = nvml_gpus()
    if from_nvml is not None:
        return from_nvml
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts or not parts[0]:
            continue
        mib = _number(parts[1]) if len(parts) > 1 else None
        gpus.append(
            Gpu(
                name=parts[0],
                memory_gb=round(mib / 1024, 1) if mib else None,
                driver=parts[2][:64] if len(parts) > 2 and parts[2] else None,
            )
        )
    return gpus


# Data-centre GPU families: a node with one of these is HPC-class whatever its count.
HPC_GPU_MODELS = frozenset(
    {"A100", "A800", "H100", "H800", "H200", "GH200", "B100", "B200", "L40S", "MI250", "MI300"}
)
HPC_MIN_GPUS = 4
HPC_MIN_GPU_MEMORY_GB = 40.0


def tier_for(gpus: int, gpu_type: str | None, gpu_memory_gb: float | None) -> str:
    """The mesh tier a profile earns (docs/mesh.md): no GPU is ``cpu``; a data-centre GPU, four or more
    GPUs, or 40 GiB on each GPU is ``hpc``; any other GPU is ``consumer-gpu``."""
    if gpus <= 0:
        return "cpu"
    if (
        (gpu_type or "").upper() in HPC_GPU_MODELS
        or gpus >= HPC_MIN_GPUS
        or (gpu_memory_gb or 0) >= HPC_MIN_GPU_MEMORY_GB
    ):
        return "hpc"
    return "consumer-gpu"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:200] or None
    except OSError:
        pass
    return platform.processor()[:200] or None


def _disk_gb(path: Path | None) -> float | None:
    try:
        return round(shutil.disk_usage(path or Path.cwd()).free / 1024**3, 1)
    except OSError:
        return None


def detect_hardware(workdir: Path | None = None, tier: str | None = None) -> HardwareProfile:
    """This machine's profile as the gateway matches it against job resources: CPUs, memory, free disk
    of ``workdir``, GPUs; its tier by the rules above unless the node's owner pinned one."""
    gpus = detect_gpus()
    gpu_type = gpu_model(gpus[0].name) if gpus else None
    known = [g.memory_gb for g in gpus if g.memory_gb]
    gpu_memory = min(known) if known else None
    return HardwareProfile(
        cpu_count=max(1, min(4096, os.cpu_count() or 1)),
        memory_gb=max(0.01, round(_memory_gb(), 2)),
        disk_gb=_disk_gb(workdir),
        gpus=min(64, len(gpus)),
        gpu_type=gpu_type,
        gpu_memory_gb=gpu_memory,
        gpu_driver=gpus[0].driver if gpus else None,
        os=f"{platform.system()} {platform.release()}"[:200],
        cpu_model=_cpu_model(),
        tier=tier or tier_for(len(gpus), gpu_type, gpu_memory),
    )
