"""A small torch training loop, spinning vs sleeping OpenMP threads, idle and beside one busy process.

Why engine processes set ``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP threads spin
while they wait, which assumes they own their cores. Each measurement is a fresh
process (the policy is read when libgomp loads); "busy" runs one ``yes`` beside it.
Rounds interleave the policies; min and median of wall time are reported.

    .venv/bin/python bench/bench_omp_wait.py [--rounds 3] [--steps 300] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_summary, markdown_table, print_machine  # noqa: E402

LOOP = """
import json, time, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(32, 256)
def steps(n):
    for _ in range(n):
        opt.zero_grad(); model(x).pow(2).mean().backward(); opt.step()
steps(20)  # warm-up
wall, cpu = time.perf_counter(), time.process_time()
steps({steps})
print(json.dumps({{"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                   "threads": torch.get_num_threads()}}))
"""


def measure(policy: str, busy: bool, steps: int) -> dict[str, float]:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    burner = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if busy else None
    try:
        time.sleep(0.2 if busy else 0)
        out = subprocess.run(
            [sys.executable, "-c", LOOP.format(steps=steps)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="one round of 50 steps")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 1, 50
    print_machine(machine_summary())
    cases = [(p, b) for b in (False, True) for p in ("ACTIVE", "PASSIVE")]
    runs: dict[tuple[str, bool], list[dict[str, float]]] = {case: [] for case in cases}
    threads = 0.0
    for _ in range(args.rounds):
        for policy, busy in cases:
            result = measure(policy, busy, args.steps)
            threads = result["threads"]
            runs[(policy, busy)].append(result)
    rows = []
    for (policy, busy), got in runs.items():
        walls = [r["wall"] for r in got]
        cpus = [r["cpu"] for r in got]
        rows.append(
            [
                "beside one busy process" if busy else "idle machine",
                policy,
                f"{min(walls):.2f} / {statistics.median(walls):.2f}",
                f"{min(cpus):.2f} / {statistics.median(cpus):.2f}",
            ]
        )
    print(f"\n{args.steps} steps, {threads:.0f} torch threads, {args.rounds} interleaved rounds\n")
    print(
        markdown_table(["machine", "OMP_WAIT_POLICY", "wall s (min / median)", "CPU s (min / median)"], rows)
    )


if __name__ == "__main__":
    main()
