"""A node's measured throughput: a short matrix-multiply and memory-bandwidth probe, cached.

A worker runs it at its first start and registers the figures with its profile
(``HardwareProfile.cpu_gflops``, ``memory_gbps``, ``gpu_tflops``). The gateway's machine-time
estimates use them where they are known (``services/machinetime.py``). The probe takes well under
a second on a CPU. Its result is kept in the worker's state directory (``probe.json``), keyed by the
hardware it measured, so a restart on the same machine does not measure again. A changed machine
(another CPU model, more memory, other GPUs) measures again.

These are the node's own figures, and the platform treats them as claims: they inform estimates,
never what a job is charged (that is metered time).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("nexa.worker")

PROBE_FILE = "probe.json"
MATMUL_N = 1024  # float32 matrices: 8 MiB each, big enough for BLAS to reach its stride
MEMORY_BYTES = 64 << 20  # copied back and forth: far past the CPU caches
BUDGET_S = 0.1  # time spent on each measurement (worker start-up waits for it once per machine)


@dataclass(frozen=True)
class Throughput:
    cpu_gflops: float  # float32 matrix multiply, all the threads NumPy's BLAS uses
    memory_gbps: float  # bytes read plus written per second, copying a 64 MiB array
    gpu_tflops: float | None = None  # bfloat16 matrix multiply on the first GPU, where there is one


def _timed(step: Any, budget_s: float) -> tuple[int, float]:
    step()  # warm-up: threads started, pages touched
    started = time.perf_counter()
    runs = 0
    while True:
        step()
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= budget_s:
            return runs, elapsed


def measure_cpu(budget_s: float = BUDGET_S) -> tuple[float, float]:
    """(GFLOP/s of a float32 matrix multiply, GB/s of a large copy) on this machine."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((MATMUL_N, MATMUL_N), dtype=np.float32)
    b = rng.random((MATMUL_N, MATMUL_N), dtype=np.float32)
    runs, elapsed = _timed(lambda: a @ b, budget_s)
    gflops = 2 * MATMUL_N**3 * runs / elapsed / 1e9
    source = np.ones(MEMORY_BYTES // 4, dtype=np.float32)
    target = np.empty_like(source)
    runs, elapsed = _timed(lambda: np.copyto(target, source), budget_s)
    gbps = 2 * source.nbytes * runs / elapsed / 1e9
    return round(gflops, 1), round(gbps, 1)


def measure_gpu(budget_s: float = BUDGET_S) -> float | None:
    """TFLOP/s of a bfloat16 matrix multiply on the first CUDA device; None without one (or torch)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)

    def step() -> None:
        a @ b
        torch.cuda.synchronize()

    runs, elapsed = _timed(step, budget_s)
    return round(2 * n**3 * runs / elapsed / 1e12, 1)


def measured(state_dir: Path, hardware_key: dict[str, Any]) -> Throughput | None:
    """This machine's throughput: cached in ``state_dir`` for ``hardware_key``, else measured now.
    None when it cannot be measured (no NumPy); the node then registers without figures."""
    path = state_dir / PROBE_FILE
    try:
        cached = json.loads(path.read_text())
        if cached.get("hardware") == hardware_key:
            return Throughput(**cached["throughput"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    try:
        cpu_gflops, memory_gbps = measure_cpu()
    except ImportError:
        return None
    found = Throughput(cpu_gflops, memory_gbps, measure_gpu())
    log.info(
        "measured this node: %.1f GFLOP/s (float32 matmul), %.1f GB/s memory%s",
        found.cpu_gflops,
        found.memory_gbps,
        f", {found.gpu_tflops} TFLOP/s bf16 on the GPU" if found.gpu_tflops else "",
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = path.with_name(f".{PROBE_FILE}.{os.getpid()}")
        staged.write_text(json.dumps({"hardware": hardware_key, "throughput": asdict(found)}))
        os.replace(staged, path)
    except OSError as exc:  # measured all the same; the next start measures again
        log.warning("could not cache the throughput probe in %s: %s", path, exc)
    return found
