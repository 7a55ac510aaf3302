"""A node's profile and tier: the documented rules, and this machine's own profile."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nexa_engines import hardware
from nexa_engines.hardware import Gpu, detect_hardware, tier_for


@pytest.mark.parametrize(
    ("gpus", "gpu_type", "memory", "tier"),
    [
        (0, None, None, "cpu"),
        (1, "RTX4090", 24.0, "consumer-gpu"),
        (2, "T4", 16.0, "consumer-gpu"),
        (1, "A100", 40.0, "hpc"),  # a data-centre model
        (1, "h100", None, "hpc"),
        (4, "RTX3090", 24.0, "hpc"),  # four or more GPUs
        (1, "RTX6000", 48.0, "hpc"),  # 40 GiB or more on each GPU
    ],
)
def test_tiers_follow_the_profile(gpus: int, gpu_type: str | None, memory: float | None, tier: str) -> None:
    assert tier_for(gpus, gpu_type, memory) == tier


def test_this_machine_profiles_itself_and_an_owner_can_pin_its_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = detect_hardware(tmp_path)
    assert profile.cpu_count >= 1 and profile.memory_gb and profile.memory_gb > 0
    assert profile.disk_gb is not None and profile.disk_gb > 0
    assert profile.os and profile.tier == ("cpu" if profile.gpus == 0 else profile.tier)
    assert detect_hardware(tmp_path, "Consumer GPU").tier == "consumer-gpu"
    # A GPU box as nvidia-smi describes it: its smallest GPU's memory and its driver are profiled.
    monkeypatch.setattr(
        hardware,
        "detect_gpus",
        lambda: [Gpu("NVIDIA A100-SXM4-80GB", 80.0, "550.54"), Gpu("NVIDIA A100-SXM4-40GB", 40.0, "550.54")],
    )
    gpu_box = detect_hardware(tmp_path)
    assert (gpu_box.gpus, gpu_box.gpu_type, gpu_box.gpu_memory_gb, gpu_box.gpu_driver, gpu_box.tier) == (
        2,
        "A100",
        40.0,
        "550.54",
        "hpc",
    )


def test_nvidia_smi_output_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA GeForce RTX 4090, 24564, 550.54.14'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert hardware.detect_gpus() == [Gpu("NVIDIA GeForce RTX 4090", 24.0, "550.54.14")]


def test_gpus_come_from_nvml_where_nvidia_ml_py_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML's answers (a stand-in module here: this machine has no GPU) become the profile's GPUs."""
    import sys
    import types

    from nexa_engines import hardware

    calls: list[str] = []
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlSystemGetDriverVersion = lambda: b"550.54.15"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 1024**3)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus = hardware.detect_gpus()
    assert gpus == [hardware.Gpu("NVIDIA H100 80GB HBM3", 80.0, "550.54.15")] * 2
    assert calls == ["init", "shutdown"]

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = no_driver  # type: ignore[attr-defined]
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)  # and no nvidia-smi either
    assert hardware.nvml_gpus() is None and hardware.detect_gpus() == []
