"""Claims with requirement matching, against the claim path before it, on a heterogeneous fleet.

32 worker processes register profiles drawn from a fixed seed (2 to 64 CPUs, 4 to 512 GiB,
50 GiB to 2 TB of disk, none or up to 8 GPUs of five types). Every round submits the same
heterogeneous jobs over HTTP, each asking for no more than some worker offers. The workers are
then released together, and they claim and complete until the queue answers 204.

- **matching.** This tree's gateway. The claim query also matches CPUs, memory, disk and GPU
  memory (the `job_requirements` join), so a job goes only to a worker that can hold it.
- **before.** The same gateway code at `--baseline` (a git revision, default the commit before
  requirement matching), run from a `git worktree` of it. Its claim query matched GPUs, GPU type and
  tier only. Its contracts know no `disk_gb` or `gpu_memory_gb`, so those fields are left out of its
  profiles and jobs.

The two alternate, with one warm-up round each, then `--rounds` interleaved rounds. Measured per
round:
- wall time from the first claim to the last worker drained;
- claims/s;
- claim latency (p50 and p95, client side);
- the gateway's CPU seconds (user and system) during the drain.

The matching rounds also check that no worker was handed a job it could not hold. The run exits
non-zero if one was, or if a job was claimed twice.

    .venv/bin/python bench/bench_claim_matching.py [--database postgres|sqlite] [--jobs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import (  # noqa: E402
    UNLIMITED_RATE_PER_MINUTE,
    machine_summary,
    markdown_table,
    percentile,
    print_machine,
    process_cpu_seconds,
    throwaway_postgres,
    write_dataset,
)
from tests.fixtures.gateway_proc import GatewayProcess, start_gateway  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 32
SEED = 16
BASELINE = "9e7c6cb"  # the last commit whose claim query did not match CPUs, memory or disk
RESULT_TIMEOUT_S = 600.0
GPU_TYPES = {"T4": 16.0, "A10G": 24.0, "L4": 24.0, "A100": 80.0, "H100": 80.0}
NEW_FIELDS = ("disk_gb", "gpu_memory_gb")  # unknown to the baseline's contracts


def fleet(seed: int = SEED) -> list[dict[str, Any]]:
    """32 hardware profiles, the same every run."""
    rng = random.Random(seed)
    profiles = []
    for _ in range(WORKERS):
        gpus = rng.choice([0, 0, 0, 1, 2, 4, 8])
        gpu_type = rng.choice(sorted(GPU_TYPES)) if gpus else None
        profiles.append(
            {
                "cpu_count": rng.choice([2, 4, 8, 16, 32, 64]),
                "memory_gb": float(rng.choice([4, 8, 16, 32, 64, 128, 256, 512])),
                "disk_gb": float(rng.choice([50, 100, 500, 2000])),
                "gpus": gpus,
                "gpu_type": gpu_type,
                "gpu_memory_gb": GPU_TYPES[gpu_type] if gpu_type else None,
            }
        )
    return profiles


def job_resources(profiles: list[dict[str, Any]], count: int, seed: int = SEED + 1) -> list[dict[str, Any]]:
    """Each job asks for at most what one worker offers (so every job fits somewhere)."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        hw = rng.choice(profiles)
        wants: dict[str, Any] = {
            "cpu": float(rng.randint(1, hw["cpu_count"])),
            "memory_gb": round(rng.uniform(1, hw["memory_gb"]), 1),
            "disk_gb": round(rng.uniform(1, hw["disk_gb"]), 1),
        }
        if hw["gpus"] and rng.random() < 0.5:
            wants |= {"gpus": rng.randint(1, hw["gpus"]), "gpu_memory_gb": hw["gpu_memory_gb"]}
            if rng.random() < 0.5:
                wants["gpu_type"] = hw["gpu_type"]
        jobs.append(wants)
    return jobs


def fits(wants: dict[str, Any], hw: dict[str, Any]) -> bool:
    return (
        wants.get("cpu", 1) <= hw["cpu_count"]
        and wants.get("memory_gb", 2) <= hw["memory_gb"]
        and wants.get("disk_gb", 0) <= hw["disk_gb"]
        and wants.get("gpus", 0) <= hw["gpus"]
        and wants.get("gpu_type") in (None, hw["gpu_type"])
        and (not wants.get("gpus") or wants.get("gpu_memory_gb", 0) <= (hw["gpu_memory_gb"] or 0))
    )


@dataclass
class WorkerReport:
    name: str
    claims: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    first_claim_at: float | None = None
    drained_at: float | None = None


def worker_main(url: str, secret: str, name: str, hardware: dict[str, Any], go: Any, out: Any) -> None:
    report = WorkerReport(name)
    try:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            answer = client.post(
                "/v1/workers/register",
                json={"name": name, "job_types": ["audit"], "hardware": hardware},
                headers={"Authorization": f"Bearer {secret}"},
            )
            answer.raise_for_status()
            client.headers["Authorization"] = f"Bearer {answer.json()['token']}"
            out.put(("ready", name))
            go.wait()
            while True:
                started = time.monotonic()
                claim = client.post("/v1/workers/claim", json={"wait_seconds": 0})
                report.latencies.append(time.monotonic() - started)
                if claim.status_code == 204:
                    report.drained_at = time.monotonic()
                    break
                if claim.status_code != 200:
                    report.errors.append(f"claim {claim.status_code}: {claim.text[:200]}")
                    break
                report.first_claim_at = report.first_claim_at or started
                job = claim.json()
                report.claims.append(job["job_id"])
                done = client.post(
                    f"/v1/workers/jobs/{job['job_id']}/complete",
                    json={"attempt": job["attempt"], "result": {}},
                )
                if done.status_code != 204:
                    report.errors.append(f"complete {done.status_code}: {done.text[:200]}")
    except Exception as exc:  # the parent must hear of it rather than wait forever
        report.errors.append(f"{type(exc).__name__}: {exc}")
    out.put(("done", report))


@dataclass
class Round:
    mode: str
    wall_s: float
    claims: int
    cpu_s: float
    p50_ms: float
    p95_ms: float
    misplaced: int
    duplicates: int
    errors: int


def run_round(
    mode: str,
    gateway: GatewayProcess,
    jobs: list[dict[str, Any]],
    dataset: Path,
    baseline_fields: str = "old",
) -> Round:
    new = mode == "matching" or baseline_fields == "all"
    profiles = [hw if new else {k: v for k, v in hw.items() if k not in NEW_FIELDS} for hw in fleet()]
    wanted: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=gateway.url, timeout=60.0, headers=gateway.headers()) as client:
        for resources in jobs:
            body = resources if new else {k: v for k, v in resources.items() if k not in NEW_FIELDS}
            r = client.post("/v1/audit", json={"dataset_uri": str(dataset), "resources": body})
            r.raise_for_status()
            wanted[r.json()["job_id"]] = resources
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    names = [f"{mode}-{i}" for i in range(WORKERS)]
    processes = [
        context.Process(
            target=worker_main, args=(gateway.url, gateway.worker_secret, n, hw, go, out), daemon=True
        )
        for n, hw in zip(names, profiles, strict=True)
    ]
    for p in processes:
        p.start()
    reports: list[WorkerReport] = []
    ready = 0
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    cpu_before = 0.0
    try:
        while len(reports) < WORKERS:
            try:
                kind, payload = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f"{mode}: workers did not finish within {RESULT_TIMEOUT_S:.0f}s") from None
            if kind == "ready":
                ready += 1
                if ready == WORKERS:
                    cpu_before = process_cpu_seconds(gateway.pid)
                    go.set()
            else:
                reports.append(payload)
                if not go.is_set():
                    go.set()
        cpu = process_cpu_seconds(gateway.pid) - cpu_before
    finally:
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    by_name = dict(zip(names, fleet(), strict=True))
    claimed = [job for r in reports for job in r.claims]
    starts = [r.first_claim_at for r in reports if r.first_claim_at is not None]
    ends = [r.drained_at for r in reports if r.drained_at is not None]
    latencies = [x for r in reports for x in r.latencies]
    for r in reports:
        for error in r.errors[:3]:
            print(f"  {r.name}: {error}")
    return Round(
        mode=mode,
        wall_s=max(ends) - min(starts) if starts and ends else 0.0,
        claims=len(claimed),
        cpu_s=cpu,
        p50_ms=percentile(latencies, 50) * 1000,
        p95_ms=percentile(latencies, 95) * 1000,
        misplaced=sum(1 for r in reports for job in r.claims if not fits(wanted[job], by_name[r.name])),
        duplicates=sum(n - 1 for n in Counter(claimed).values() if n > 1),
        errors=sum(len(r.errors) for r in reports),
    )


def baseline_tree(tmp: Path, revision: str) -> Path:
    tree = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision], check=True)
    return tree


def start(
    kind: str, tmp: Path, name: str, dataset_root: Path, stack: ExitStack, code: Path | None
) -> GatewayProcess:
    if kind == "postgres":
        url = stack.enter_context(throwaway_postgres()).new_database(f"bench_{name}")
    else:
        url = f"sqlite:///{tmp / name / 'nexa.db'}"
    env = {
        "NEXA_RATE_LIMIT_PER_MINUTE": str(UNLIMITED_RATE_PER_MINUTE),
        "NEXA_SCHEDULABILITY_INTERVAL_SECONDS": "0",  # the sweep is not the claim path
    }
    if code is not None:  # the baseline's packages first on the path (the venv holds this tree's)
        env["PYTHONPATH"] = ":".join(str(code / p) for p in ("api-gateway", "sdk", "store", "engines"))
    gateway = start_gateway(
        tmp / name,
        name=name,
        database_url=url,
        allowed_dataset_roots=[dataset_root],
        lease_seconds=60,
        heartbeat_seconds=20,
        extra_env=env,
    )
    stack.callback(gateway.stop)
    return gateway


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--jobs", type=int, default=400, help="jobs per round (default 400)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per mode (default 3)")
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"git revision of the claim path before (default {BASELINE})"
    )
    parser.add_argument(
        "--baseline-fields",
        choices=("old", "all"),
        default="old",
        help="'all': the baseline knows disk_gb and gpu_memory_gb too, so both run the same workload "
        "(for a baseline at or after requirement matching)",
    )
    args = parser.parse_args(argv)
    print_machine(machine_summary())
    print(
        f"{WORKERS} workers, {args.jobs} jobs a round, {args.rounds} rounds a mode after one warm-up, {args.database}"
    )
    jobs = job_resources(fleet(), args.jobs)
    rows: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="nexa-bench-matching-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        dataset = write_dataset(tmp)
        old = baseline_tree(tmp, args.baseline)
        stack.callback(
            subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False
        )
        gateways = {
            "before": start(args.database, tmp, "before", tmp, stack, old),
            "matching": start(args.database, tmp, "matching", tmp, stack, None),
        }
        for number in range(args.rounds + 1):
            for mode in ("before", "matching"):
                row = run_round(mode, gateways[mode], jobs, dataset, args.baseline_fields)
                label = "warm-up" if number == 0 else f"round {number}"
                print(
                    f"  {label} {mode}: {row.claims} claims in {row.wall_s:.2f}s, p50 {row.p50_ms:.1f} ms, "
                    f"gateway CPU {row.cpu_s:.2f}s, misplaced {row.misplaced}",
                    flush=True,
                )
                if number:
                    rows.append(row)
    table = []
    for mode in ("before", "matching"):
        mine = [r for r in rows if r.mode == mode]
        walls = [r.wall_s for r in mine]
        table.append(
            (
                mode,
                WORKERS,
                args.jobs,
                f"{min(walls):.2f} / {statistics.median(walls):.2f}",
                f"{args.jobs / statistics.median(walls):.0f}",
                f"{min(r.p50_ms for r in mine):.1f} / {statistics.median(r.p50_ms for r in mine):.1f}",
                f"{statistics.median(r.p95_ms for r in mine):.1f}",
                f"{min(r.cpu_s for r in mine):.2f} / {statistics.median(r.cpu_s for r in mine):.2f}",
                sum(r.misplaced for r in mine),
                sum(r.duplicates for r in mine),
                sum(r.errors for r in mine),
            )
        )
    headers = (
        "claim path",
        "workers",
        "jobs/round",
        "wall s min / median",
        "claims/s (median)",
        "claim p50 ms min / median",
        "claim p95 ms (median)",
        "gateway CPU s min / median",
        "jobs on a worker too small",
        "double claims",
        "errors",
    )
    print("\n" + markdown_table(headers, table))
    matching = [r for r in rows if r.mode == "matching"]
    bad = any(r.misplaced or r.duplicates or r.errors or r.claims != args.jobs for r in matching)
    print(f"\nmatching placed every job on a worker that holds it, once: {'no' if bad else 'yes'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
