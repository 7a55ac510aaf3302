"""Gateway submit and status requests/s next to a bare FastAPI app, measured in one run.

Both servers run as processes under the same uvicorn settings; the load comes from
a separate process (asyncio on uvloop, a minimal HTTP/1.1 client, fixed concurrency over
keep-alive connections; httpx cannot generate enough load, see common.RawHttpConnection).
Rounds alternate which server goes first, so machine noise hits both. Exits
non-zero when any request failed.

    .venv/bin/python bench/bench_gateway.py [--quick] [--database sqlite|postgres] [--profile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import (  # noqa: E402
    OUT_DIR,
    LoadResult,
    LoadSpec,
    machine_summary,
    markdown_table,
    percentile,
    print_machine,
    py_spy_recording,
    run_load_in_subprocess,
    start_bare_app,
    start_bench_gateway,
    throwaway_postgres,
    top_frames,
    unique_prefix,
    write_dataset,
)

GOAL_RATIO = 0.5
STATUS_JOBS = 64  # distinct jobs the status scenario cycles through


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    pid: int
    headers: dict[str, str]


@dataclass
class Measured:
    scenario: str
    server: str
    round: int
    result: LoadResult


# A scenario turns (server, idempotency prefix) into the load to put on it.
Scenario = Callable[[Server, str], LoadSpec]


def _settings(args: argparse.Namespace) -> tuple[float, float, int]:
    """(warm-up seconds, measured seconds, rounds) for this run."""
    if args.quick:
        return 0.5, 2.0, 1
    return args.warmup, args.duration, args.rounds


def build_scenarios(dataset: Path, job_ids: list[str], args: argparse.Namespace) -> dict[str, Scenario]:
    """The two scenarios of the issue: submit (POST) and status (GET), gateway and bare alike."""
    warmup, duration, _ = _settings(args)
    body = {"dataset_uri": str(dataset)}

    def submit(server: Server, prefix: str) -> LoadSpec:
        gateway = server.name == "gateway"
        return LoadSpec(
            base_url=server.url,
            method="POST",
            paths=("/v1/audit",) if gateway else ("/items",),
            expect_status=(201,),
            headers=server.headers,
            body=body,
            idempotency_prefix=prefix,
            concurrency=args.concurrency,
            warmup_s=warmup,
            duration_s=duration,
            server_pid=server.pid,
        )

    def status(server: Server, _prefix: str) -> LoadSpec:
        gateway = server.name == "gateway"
        template = "/v1/jobs/{}" if gateway else "/items/{}"
        return LoadSpec(
            base_url=server.url,
            method="GET",
            paths=tuple(template.format(job_id) for job_id in job_ids),
            expect_status=(200,),
            headers=server.headers,
            concurrency=args.concurrency,
            warmup_s=warmup,
            duration_s=duration,
            server_pid=server.pid,
        )

    return {"submit": submit, "status": status}


def seed_status_jobs(gateway: Server, dataset: Path) -> list[str]:
    """Jobs for the status scenario to read back."""
    ids = []
    with httpx.Client(base_url=gateway.url, headers=gateway.headers, timeout=30.0) as client:
        for _ in range(STATUS_JOBS):
            answer = client.post("/v1/audit", json={"dataset_uri": str(dataset)})
            if answer.status_code != 201:
                raise SystemExit(f"seeding a job failed: {answer.status_code} {answer.text[:300]}")
            ids.append(answer.json()["job_id"])
    return ids


def measure(scenario: str, make: Scenario, server: Server, round_no: int) -> Measured:
    """One timed load run against one server, with the server's CPU use over the same span."""
    result = run_load_in_subprocess(make(server, unique_prefix(f"{scenario}{round_no}")))
    print(
        f"  {scenario:<6} {server.name:<7} round {round_no}: {result.rps:8.0f} req/s, {result.errors} errors",
        flush=True,
    )
    for sample in result.error_samples:
        print(f"    error: {sample}", flush=True)
    return Measured(scenario, server.name, round_no, result)


def run_rounds(scenarios: dict[str, Scenario], servers: list[Server], rounds: int) -> list[Measured]:
    """Every scenario, `rounds` times per server; the first server alternates between rounds."""
    measured = []
    for name, make in scenarios.items():
        for round_no in range(1, rounds + 1):
            order = servers if round_no % 2 == 1 else list(reversed(servers))
            for server in order:
                measured.append(measure(name, make, server, round_no))
    return measured


def _pct(cpu_s: float, wall_s: float) -> str:
    return f"{100 * cpu_s / wall_s:.0f}%" if wall_s > 0 else "-"


def round_table(measured: list[Measured]) -> str:
    rows = [
        (
            m.scenario,
            m.server,
            m.round,
            f"{m.result.rps:.0f}",
            f"{percentile(m.result.latencies_ms, 50):.1f}",
            f"{percentile(m.result.latencies_ms, 99):.1f}",
            m.result.errors,
            _pct(m.result.client_cpu_s, m.result.elapsed_s),
            _pct(m.result.server_cpu_s, m.result.elapsed_s),
        )
        for m in measured
    ]
    headers = (
        "scenario",
        "server",
        "round",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "client CPU",
        "server CPU",
    )
    return markdown_table(headers, rows)


@dataclass(frozen=True)
class Pooled:
    rps: float
    p50: float
    p99: float
    errors: int


def pooled(measured: list[Measured], scenario: str, server: str) -> Pooled:
    """All rounds of one server in one scenario taken together."""
    runs = [m.result for m in measured if m.scenario == scenario and m.server == server]
    latencies = [ms for r in runs for ms in r.latencies_ms]
    elapsed = sum(r.elapsed_s for r in runs)
    return Pooled(
        rps=sum(r.requests for r in runs) / elapsed if elapsed else 0.0,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        errors=sum(r.errors for r in runs),
    )


def summary_table(measured: list[Measured], scenarios: list[str]) -> tuple[str, bool]:
    """The gateway/bare comparison per scenario, and whether every ratio meets the goal."""
    rows = []
    all_met = True
    for scenario in scenarios:
        gw, bare = pooled(measured, scenario, "gateway"), pooled(measured, scenario, "bare")
        ratio = gw.rps / bare.rps if bare.rps else 0.0
        met = ratio >= GOAL_RATIO
        all_met &= met
        rows.append(
            (
                scenario,
                f"{gw.rps:.0f}",
                f"{bare.rps:.0f}",
                f"{ratio:.2f}",
                f"{gw.p50:.1f} / {gw.p99:.1f}",
                f"{bare.p50:.1f} / {bare.p99:.1f}",
                gw.errors + bare.errors,
                "met" if met else "missed",
            )
        )
    headers = (
        "scenario",
        "gateway req/s",
        "bare req/s",
        "ratio",
        "gateway p50/p99 ms",
        "bare p50/p99 ms",
        "errors",
        f"goal >= {GOAL_RATIO}",
    )
    return markdown_table(headers, rows), all_met


def profile_gateway(scenarios: dict[str, Scenario], gateway: Server, seconds: float) -> None:
    """One extra gateway run per scenario under py-spy; prints where the GIL time went."""
    for name, make in scenarios.items():
        output = OUT_DIR / f"gateway-{name}.collapsed.txt"
        output.unlink(missing_ok=True)
        with py_spy_recording(gateway.pid, output, seconds):
            run_load_in_subprocess(make(gateway, unique_prefix(f"profile-{name}")))
        if not output.exists():
            print(f"no profile written for {name}")
            continue
        print(f"\nprofile, {name} (share of GIL-held samples; collapsed stacks in {output}):")
        rows = [(fn, f"{incl:.1f}%", f"{own:.1f}%") for fn, incl, own in top_frames(output, top=40)]
        print(markdown_table(("function", "inclusive", "self"), rows))


@contextmanager
def database_url(kind: str) -> Iterator[str | None]:
    """None (the gateway's own SQLite under its home) or a fresh throwaway PostgreSQL database."""
    if kind == "sqlite":
        yield None
        return
    with throwaway_postgres() as server:
        yield server.new_database("nexa_bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds of smoke run")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--concurrency", type=int, default=32, help="open connections (default 32)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--rounds", type=int, default=2, help="runs per server and scenario")
    parser.add_argument("--profile", action="store_true", help="afterwards, profile the gateway with py-spy")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_machine(machine_summary())
    _, duration, rounds = _settings(args)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nexa-bench-gw-")))
        dataset = write_dataset(tmp)
        url = stack.enter_context(database_url(args.database))
        gateway_proc = start_bench_gateway(tmp / "gateway", database_url=url, dataset_root=tmp)
        stack.callback(gateway_proc.stop)
        bare_proc, bare_url = start_bare_app(tmp / "bare")
        stack.callback(bare_proc.stop)
        gateway = Server("gateway", gateway_proc.url, gateway_proc.pid, gateway_proc.headers())
        bare = Server("bare", bare_url, bare_proc.pid, gateway_proc.headers())
        scenarios = build_scenarios(dataset, seed_status_jobs(gateway, dataset), args)
        print(
            f"database {args.database}, {args.concurrency} connections, "
            f"{rounds} round(s) x {duration:.0f}s per server and scenario"
        )
        measured = run_rounds(scenarios, [bare, gateway], rounds)
        print("\n" + round_table(measured) + "\n")
        summary, all_met = summary_table(measured, list(scenarios))
        print(summary)
        errors = sum(m.result.errors for m in measured)
        if args.profile:
            profile_gateway(scenarios, gateway, duration)
    verdict = "met" if all_met else "missed"
    print(f"\ngoal gateway/bare >= {GOAL_RATIO}: {verdict}; errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
