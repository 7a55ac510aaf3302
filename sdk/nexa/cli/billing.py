"""``nexa billing``: your spend this month (or any period) and the prices behind it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import typer
from rich.table import Table

from nexa.cli.context import handle_errors, make_client
from nexa.cli.render import console, print_json
from nexa.contracts.billing import BillingSummary, JobCost


def money(amount: Decimal) -> str:
    """Dollars to the cent; a charge below a cent is shown, not rounded away to $0.00."""
    if 0 < amount < Decimal("0.01"):
        return f"${amount:.6f}".rstrip("0")
    return f"${amount:,.2f}"


def summary_tables(bill: BillingSummary) -> list[Table]:
    by_type = Table(title="spend by job type", show_edge=False, header_style="bold")
    by_type.add_column("JOB TYPE")
    by_type.add_column("SPEND", justify="right")
    for job_type, amount in sorted(bill.by_job_type.items(), key=lambda kv: -kv[1]):
        by_type.add_row(job_type, money(amount))
    jobs = Table(title="most expensive jobs", show_edge=False, header_style="bold")
    for column in ("JOB ID", "TYPE", "USAGE", "SPEND"):
        jobs.add_column(column, no_wrap=column == "JOB ID", justify="right" if column == "SPEND" else "left")
    for job in bill.by_job[:20]:
        used = ", ".join(f"{line.quantity:,} {line.kind}" for line in job.lines)
        jobs.add_row(job.job_id, job.job_type, used, money(job.amount))
    usage = Table(title="usage", show_edge=False, header_style="bold")
    usage.add_column("KIND")
    usage.add_column("AMOUNT", justify="right")
    usage.add_column("", style="dim")
    for kind, amount in sorted(bill.usage.items()):
        usage.add_row(kind, f"{amount:,}", "not priced" if kind in bill.unpriced else "")
    return [by_type, jobs, usage]


def cost_table(cost: JobCost) -> Table:
    """A job's units: estimated at submission, then used and charged."""
    estimated = money(cost.estimate.total) if cost.estimate is not None else "not kept"
    table = Table(
        title=f"{cost.job_id} ({cost.job_type}): charged {money(cost.charged)}, estimated {estimated}",
        title_justify="left",
        show_edge=False,
        header_style="bold",
    )
    for column in ("KIND", "ESTIMATED", "USED", "CHARGED", "BASIS"):
        table.add_column(column, justify="right" if column in ("ESTIMATED", "USED", "CHARGED") else "left")
    for line in cost.lines:
        guess = "-" if line.estimated_quantity is None else f"{line.estimated_quantity:,}"
        table.add_row(line.kind, guess, f"{line.quantity:,}", money(line.amount), line.basis)
    return table


@handle_errors
def billing(
    start: Annotated[
        datetime | None,
        typer.Option("--start", help="Period start (ISO date or time, UTC); this month's first day."),
    ] = None,
    end: Annotated[datetime | None, typer.Option("--end", help="Period end, exclusive; now.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Your spend for a period: total, by job type, the most expensive jobs, and the usage behind it."""
    with make_client() as client:
        bill = client.billing_summary(start=start, end=end)
    if as_json:
        print_json(bill.model_dump(mode="json"))
        return
    console.print(
        f"[bold]{money(bill.total)}[/] from {bill.start:%Y-%m-%d %H:%M} to {bill.end:%Y-%m-%d %H:%M} UTC "
        f"(price book: {bill.price_book})"
    )
    for table in summary_tables(bill):
        if table.row_count:
            console.print(table)
