"""``nexa leaderboard``, ``nexa workers credits`` and ``nexa jobs verification``: the mesh's standing."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nexa.cli.context import handle_errors, make_client
from nexa.cli.render import console, print_json
from nexa.contracts.mesh import LeaderboardRow, VerificationStatus

VERDICT_STYLES = {
    "agreed": "green",
    "outlier": "red",
    "failed": "red",
    "cancelled": "dim",
    "pending": "yellow",
}


@handle_errors
def leaderboard(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows to show.")] = 20,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV (for a spreadsheet).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Nodes by credits earned for verified work, with their reputation."""
    with make_client() as client:
        if as_csv:
            sys.stdout.write(client.leaderboard_csv(limit=limit))
            return
        rows = client.leaderboard(limit=limit)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        console.print("no node has a record yet: credits come from verified work (docs/mesh.md)")
        return
    console.print(leaderboard_table(rows))


def leaderboard_table(rows: list[LeaderboardRow]) -> Table:
    table = Table(title="leaderboard", title_justify="left", show_edge=False, header_style="bold")
    for column in ("RANK", "NODE", "NAME", "TIER", "CREDITS", "VERIFIED", "REPUTATION"):
        table.add_column(
            column, justify="right" if column in ("RANK", "CREDITS", "VERIFIED", "REPUTATION") else "left"
        )
    for r in rows:
        table.add_row(
            str(r.rank),
            r.worker_id or "-",
            escape(r.name),
            r.tier,
            f"{r.credits:.3f}",
            str(r.verified_jobs),
            f"{r.reputation:.2f}",
        )
    return table


@handle_errors
def credits(
    worker_id: Annotated[str, typer.Argument(help="The worker's id (wrk_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A node's credits, reputation and latest credit entries."""
    with make_client() as client:
        found = client.node_credits(worker_id)
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    gflops = f"{found.verified_gflops:.1f} GFLOP/s" if found.verified_gflops else "not measured"
    console.print(
        f"{found.worker_id} ({escape(found.name)}), tier {found.tier}: {found.credits:.3f} credits "
        f"(granted {found.granted:.3f}, penalties {found.penalties:.3f}), reputation {found.reputation:.2f}, "
        f"{found.verified_jobs} verified, {found.outliers} outliers, {found.lost_leases} lost leases, "
        f"throughput {gflops}"
    )
    if found.entries:
        table = Table(show_edge=False, header_style="bold")
        for column in ("SEQ", "KIND", "CREDITS", "JOB", "REASON"):
            table.add_column(column)
        for e in found.entries:
            table.add_row(str(e.seq), e.kind, f"{e.credits:+.3f}", e.job_id or "-", escape(e.reason))
        console.print(table)


def verification_table(found: VerificationStatus) -> Table:
    table = Table(
        title=f"{found.job_id}: {found.state} ({found.purpose}, {found.compare}, quorum {found.quorum})",
        show_edge=False,
        header_style="bold",
    )
    for column in ("#", "REPLICA", "STATUS", "NODE", "DIGEST", "VERDICT"):
        table.add_column(column)
    for r in found.replicas:
        style = VERDICT_STYLES.get(r.verdict, "")
        table.add_row(
            str(r.index + 1),
            r.job_id,
            r.status,
            r.worker_id or "-",
            (r.digest or "-")[:16],
            f"[{style}]{r.verdict}[/]" if style else r.verdict,
        )
    return table


@handle_errors
def verification(
    job_id: Annotated[str, typer.Argument(help="Job id (job_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A verified job's replicas: which node ran each, what its outputs hash to, and its verdict."""
    with make_client() as client:
        found = client.job_verification(job_id)
    if as_json:
        print_json(found.model_dump(mode="json"))
    else:
        console.print(verification_table(found))
