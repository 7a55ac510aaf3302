"""What 1,000 open log streams cost everyone else: request latency with and without them.

A real gateway process (SQLite) holds N pending audit jobs. One helper process
opens ``--streams`` follow-mode log streams (``GET /v1/jobs/{id}/logs?follow=true``,
one per job) and keeps reading them; a load process sends status reads
(``GET /v1/jobs/{id}``) and health checks at a fixed concurrency. Rounds
alternate "no streams" and "streams open", so both see the same machine state;
each reports requests/s, p50 and p99 latency and the gateway's CPU seconds.
The goal (issue 12): p99 with streams within 2x of p99 without.

    .venv/bin/python bench/bench_sse.py [--quick] [--streams 1000] [--rounds 3] [--duration 10] [--source DIR]

``--source DIR`` runs the gateway from another checkout's packages (e.g. a
``git worktree`` of an older commit) to measure the code before a change.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import (  # noqa: E402
    UNLIMITED_RATE_PER_MINUTE,
    GatewayProcess,
    LoadSpec,
    machine_summary,
    markdown_table,
    percentile,
    print_machine,
    run_load_in_subprocess,
    start_gateway,
    write_dataset,
)


def _hold_streams(url: str, key: str, job_ids: list[str], ready: Any, stop: Any) -> None:
    """(In its own process) open one follow stream per job and read until ``stop`` is set."""

    async def main() -> None:
        limits = httpx.Limits(max_connections=len(job_ids) + 10, max_keepalive_connections=0)
        timeout = httpx.Timeout(30.0, read=None)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
            opened = 0

            async def follow(job_id: str) -> None:
                nonlocal opened
                headers = {"Authorization": f"Bearer {key}"}
                async with client.stream("GET", f"/v1/jobs/{job_id}/logs?follow=true", headers=headers) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("retry:"):
                            opened += 1
                            if opened == len(job_ids):
                                ready.set()

            tasks = [asyncio.create_task(follow(j)) for j in job_ids]
            while not stop.is_set():
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def _submit_jobs(gw: GatewayProcess, dataset: Path, count: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=gw.url, headers=gw.headers(), timeout=30) as client:
        for _ in range(count):
            r = client.post("/v1/audit", json={"dataset_uri": str(dataset)})
            r.raise_for_status()
            ids.append(r.json()["job_id"])
    return ids


def _measure(gw: GatewayProcess, job_ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    spec = LoadSpec(
        base_url=gw.url,
        method="GET",
        paths=tuple(f"/v1/jobs/{j}" for j in job_ids[:200]) + ("/healthz",),
        expect_status=(200,),
        headers={"Authorization": f"Bearer {gw.api_key}"},
        concurrency=args.concurrency,
        warmup_s=args.warmup,
        duration_s=args.duration,
        server_pid=gw.pid,
    )
    result = run_load_in_subprocess(spec)
    if result.errors:
        print(f"  {result.errors} errors, e.g. {result.error_samples[:2]}")
    return {
        "rps": result.rps,
        "p50": percentile(result.latencies_ms, 50),
        "p99": percentile(result.latencies_ms, 99),
        "server_cpu": result.server_cpu_s,
        "errors": result.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--source", type=Path, default=None, help="run the gateway from this checkout")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 streams, one short round")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.rounds, args.duration, args.warmup = 50, 1, 2.0, 0.5

    summary = machine_summary()
    print_machine(summary)
    extra = {"NEXA_RATE_LIMIT_PER_MINUTE": str(UNLIMITED_RATE_PER_MINUTE)}
    if args.source is not None:
        src = args.source.resolve()
        extra["PYTHONPATH"] = os.pathsep.join(
            str(src / p) for p in ("sdk", "api-gateway", "engines", "operator", ".")
        )
    context = multiprocessing.get_context("spawn")
    results: dict[str, list[dict[str, Any]]] = {"no streams": [], f"{args.streams} streams": []}
    with tempfile.TemporaryDirectory(prefix="nexa-bench-sse-") as tmp:
        home = Path(tmp)
        dataset = write_dataset(home)
        gw = start_gateway(
            home / "gw", name="gateway", allowed_dataset_roots=[home], lease_seconds=600, extra_env=extra
        )
        try:
            job_ids = _submit_jobs(gw, dataset, args.streams)
            print(f"{len(job_ids)} pending jobs; gateway from {args.source or 'this checkout'}")
            for round_no in range(1, args.rounds + 1):
                results["no streams"].append(_measure(gw, job_ids, args))
                ready, stop = context.Event(), context.Event()
                holder = context.Process(
                    target=_hold_streams, args=(gw.url, gw.api_key, job_ids, ready, stop)
                )
                holder.start()
                if not ready.wait(120):
                    raise SystemExit("the streams did not all open within 120 s")
                time.sleep(1.0)
                results[f"{args.streams} streams"].append(_measure(gw, job_ids, args))
                stop.set()
                holder.join(60)
                if holder.is_alive():
                    holder.kill()
                time.sleep(1.0)
                print(
                    f"round {round_no}: "
                    + ", ".join(f"{k} p99 {v[-1]['p99']:.1f} ms" for k, v in results.items())
                )
        finally:
            gw.stop()

    rows = []
    for label, runs in results.items():
        rows.append(
            [
                label,
                f"{statistics.median(r['rps'] for r in runs):.0f}",
                f"{min(r['p50'] for r in runs):.1f} / {statistics.median(r['p50'] for r in runs):.1f}",
                f"{min(r['p99'] for r in runs):.1f} / {statistics.median(r['p99'] for r in runs):.1f}",
                f"{min(r['server_cpu'] for r in runs):.2f} / {statistics.median(r['server_cpu'] for r in runs):.2f}",
                sum(r["errors"] for r in runs),
            ]
        )
    print()
    print(
        markdown_table(
            [
                "condition",
                "req/s (median)",
                "p50 ms (min / median)",
                "p99 ms (min / median)",
                "gateway CPU s (min / median)",
                "errors",
            ],
            rows,
        )
    )
    base = statistics.median(r["p99"] for r in results["no streams"])
    loaded = statistics.median(r["p99"] for r in results[f"{args.streams} streams"])
    print(f"\np99 with streams / without: {loaded / base:.2f}x (goal: at most 2x)")
    print(f"machine: {summary}")


if __name__ == "__main__":
    main()
