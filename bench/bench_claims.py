"""Job claims/s with 8 worker processes, and proof that no job was claimed twice.

A throwaway PostgreSQL (and, for reference, SQLite) backs a real gateway process;
N pending audit jobs are created in bulk through the gateway's own service
functions; 8 worker processes register over HTTP and loop claim -> complete until
the queue answers 204. Afterwards the database and the client-side records are
checked: every job completed once, on attempt 1, with one 'claimed' event, by the
worker that received it. Exits non-zero on any failed request or double claim.

    .venv/bin/python bench/bench_claims.py [--quick] [--database postgres|sqlite|both] [--jobs N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench.common import (  # noqa: E402
    GatewayProcess,
    machine_summary,
    markdown_table,
    print_machine,
    start_bench_gateway,
    throwaway_postgres,
    write_dataset,
)

WORKERS = 8
SEED_BATCH = 500
RESULT_TIMEOUT_S = 300.0


@dataclass
class WorkerReport:
    """What one worker process saw."""

    worker_id: str
    claims: list[tuple[str, int]] = field(default_factory=list)  # (job_id, attempt)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    first_claim_at: float | None = None  # time.monotonic(), comparable across processes on one host
    drained_at: float | None = None


def worker_main(url: str, secret: str, name: str, go: Any, out: Any) -> None:
    """One worker process: register, wait for the start signal, claim and complete until 204."""
    report = WorkerReport(worker_id="")
    try:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            answer = client.post(
                "/v1/workers/register",
                json={"name": name, "job_types": ["audit"]},
                headers={"Authorization": f"Bearer {secret}"},
            )
            answer.raise_for_status()
            registered = answer.json()
            report.worker_id = registered["worker_id"]
            client.headers["Authorization"] = f"Bearer {registered['token']}"
            out.put(("ready", name))
            go.wait()
            _claim_until_drained(client, report)
    except Exception as exc:  # the parent must hear about any failure, not wait for a report forever
        report.errors += 1
        report.error_samples.append(f"{type(exc).__name__}: {exc}")
    out.put(("done", report))


def _claim_until_drained(client: httpx.Client, report: WorkerReport) -> None:
    while True:
        started = time.monotonic()
        claim = client.post("/v1/workers/claim", json={"wait_seconds": 0})
        if claim.status_code == 204:
            report.drained_at = time.monotonic()
            return
        if claim.status_code != 200:
            _error(report, f"claim: {claim.status_code} {claim.text[:200]}")
            if report.errors > 20:
                return
            continue
        if report.first_claim_at is None:
            report.first_claim_at = started
        job = claim.json()
        report.claims.append((job["job_id"], job["attempt"]))
        done = client.post(
            f"/v1/workers/jobs/{job['job_id']}/complete",
            json={"attempt": job["attempt"], "result": {"bench": True}},
        )
        if done.status_code != 204:
            _error(report, f"complete {job['job_id']}: {done.status_code} {done.text[:200]}")


def _error(report: WorkerReport, detail: str) -> None:
    report.errors += 1
    if len(report.error_samples) < 5:
        report.error_samples.append(detail)


def seed_jobs(database_url: str, dataset: Path, count: int) -> None:
    """Create `count` pending audit jobs for tenant "default" with the gateway's own service code."""
    from nexa.contracts import AuditSpec, JobType
    from nexa_gateway.db import Database, Tenant
    from nexa_gateway.services.jobs import submit_job

    db = Database(database_url)
    try:
        with db.session() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == "default"))
        if tenant_id is None:
            raise SystemExit("the gateway did not create tenant 'default' (NEXA_BOOTSTRAP_API_KEY unset?)")
        spec = AuditSpec(dataset_uri=str(dataset))
        for start in range(0, count, SEED_BATCH):
            with db.session() as session:
                for i in range(start, min(start + SEED_BATCH, count)):
                    submit_job(session, tenant_id, JobType.audit, spec, f"bench-claims-{i}")
    finally:
        db.dispose()


@dataclass
class Verdict:
    """The database's view after the run; every list must be empty and every count equal N."""

    completed: int
    not_attempt_one: int
    claimed_events: int
    jobs_with_other_than_one_claim: int
    completed_events: int
    wrong_worker: int


def verify(database_url: str, holders: dict[str, str]) -> Verdict:
    """Read back every job and its events; `holders` maps job id to the worker that got it."""
    from nexa_gateway.db import Database, Job, JobEvent

    db = Database(database_url)
    try:
        with db.session() as session:
            rows = session.execute(select(Job.id, Job.status, Job.attempt, Job.worker_id)).all()
            claims_per_job = dict(
                session.execute(
                    select(JobEvent.job_id, func.count())
                    .where(JobEvent.kind == "claimed")
                    .group_by(JobEvent.job_id)
                ).all()
            )
            completed_events = session.scalar(
                select(func.count()).select_from(JobEvent).where(JobEvent.kind == "completed")
            )
    finally:
        db.dispose()
    return Verdict(
        completed=sum(1 for r in rows if r.status == "completed"),
        not_attempt_one=sum(1 for r in rows if r.attempt != 1),
        claimed_events=sum(claims_per_job.values()),
        jobs_with_other_than_one_claim=sum(1 for r in rows if claims_per_job.get(r.id, 0) != 1),
        completed_events=int(completed_events or 0),
        wrong_worker=sum(1 for r in rows if holders.get(r.id) != r.worker_id),
    )


@dataclass
class Row:
    database: str
    jobs: int
    claims: int
    wall_s: float
    client_duplicates: int
    errors: int
    verdict: Verdict

    @property
    def ok(self) -> bool:
        v, n = self.verdict, self.jobs
        return (
            self.errors == 0
            and self.client_duplicates == 0
            and self.claims == n
            and v.completed == n
            and v.not_attempt_one == 0
            and v.claimed_events == n
            and v.jobs_with_other_than_one_claim == 0
            and v.completed_events == n
            and v.wrong_worker == 0
        )


def run_workers(gateway: GatewayProcess) -> list[WorkerReport]:
    """Start the worker processes, release them together, and collect their reports."""
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    processes = [
        context.Process(
            target=worker_main, args=(gateway.url, gateway.worker_secret, f"bench-{i}", go, out), daemon=True
        )
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    reports: list[WorkerReport] = []
    ready = 0
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    try:
        while len(reports) < WORKERS:
            try:
                kind, payload = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f"workers did not finish within {RESULT_TIMEOUT_S:.0f}s") from None
            if kind == "ready":
                ready += 1
                if ready == WORKERS:
                    go.set()
            else:
                reports.append(payload)
                if not go.is_set():  # a worker failed to register: release the others so they end
                    go.set()
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return reports


def measure(name: str, gateway: GatewayProcess, database_url: str, dataset: Path, jobs: int) -> Row:
    """Seed, drain with the workers, verify; one row of the results table."""
    seed_jobs(database_url, dataset, jobs)
    reports = run_workers(gateway)
    claimed = [job_id for r in reports for job_id, _ in r.claims]
    holders = {job_id: r.worker_id for r in reports for job_id, _ in r.claims}
    starts = [r.first_claim_at for r in reports if r.first_claim_at is not None]
    ends = [r.drained_at for r in reports if r.drained_at is not None]
    wall = max(ends) - min(starts) if starts and ends else 0.0
    for r in reports:
        for sample in r.error_samples:
            print(f"  worker {r.worker_id or '?'} error: {sample}")
    duplicates = sum(n - 1 for n in Counter(claimed).values() if n > 1)
    row = Row(
        database=name,
        jobs=jobs,
        claims=len(claimed),
        wall_s=wall,
        client_duplicates=duplicates,
        errors=sum(r.errors for r in reports),
        verdict=verify(database_url, holders),
    )
    per_worker = sorted(len(r.claims) for r in reports)
    print(f"  {name}: {row.claims} claims in {wall:.2f}s; claims per worker {per_worker}", flush=True)
    return row


def results_table(rows: list[Row]) -> str:
    headers = (
        "database",
        "workers",
        "jobs",
        "claims",
        "wall s",
        "claims/s",
        "double claims (client)",
        "jobs without exactly 1 claim (db)",
        "attempt != 1",
        "completed",
        "wrong holder",
        "errors",
        "verdict",
    )
    body = [
        (
            r.database,
            WORKERS,
            r.jobs,
            r.claims,
            f"{r.wall_s:.2f}",
            f"{r.claims / r.wall_s:.0f}" if r.wall_s else "-",
            r.client_duplicates,
            r.verdict.jobs_with_other_than_one_claim,
            r.verdict.not_attempt_one,
            r.verdict.completed,
            r.verdict.wrong_worker,
            r.errors,
            "ok" if r.ok else "FAILED",
        )
        for r in rows
    ]
    return markdown_table(headers, body)


@contextmanager
def gateway_on(kind: str, tmp: Path, dataset_root: Path) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway on a fresh database of this kind, and that database's SQLAlchemy URL."""
    with ExitStack() as stack:
        if kind == "postgres":
            url = stack.enter_context(throwaway_postgres()).new_database("nexa_bench")
        else:
            url = f"sqlite:///{tmp / kind / 'nexa.db'}"
        gateway = start_bench_gateway(tmp / kind, database_url=url, dataset_root=dataset_root)
        stack.callback(gateway.stop)
        yield gateway, url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds of smoke run (200 jobs)")
    parser.add_argument("--database", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--jobs", type=int, default=2000, help="pending jobs to drain (default 2000)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = 200 if args.quick else args.jobs
    kinds = ["postgres", "sqlite"] if args.database == "both" else [args.database]
    print_machine(machine_summary())
    print(f"{WORKERS} worker processes, {jobs} jobs per database")
    rows = []
    with tempfile.TemporaryDirectory(prefix="nexa-bench-claims-") as tmp_name:
        tmp = Path(tmp_name)
        dataset = write_dataset(tmp)
        for kind in kinds:
            with gateway_on(kind, tmp, tmp) as (gateway, url):
                rows.append(measure(kind, gateway, url, dataset, jobs))
    print("\n" + results_table(rows))
    failed = [r.database for r in rows if not r.ok]
    print(
        f"\nzero double claims and every job completed once: {'no, ' + ', '.join(failed) if failed else 'yes'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
