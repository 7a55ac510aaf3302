"""``nexa audit-log``: who changed what in your tenant, when and from where."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nexa.cli.context import handle_errors, make_client
from nexa.cli.render import console, print_json


@handle_errors
def audit_log(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Entries to show.")] = 50,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action, e.g. 'DELETE /v1/keys/{key_id}'.")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this key or worker id.")] = None,
    since: Annotated[
        datetime | None, typer.Option("--since", help="Only entries at or after this time (ISO 8601).")
    ] = None,
    before: Annotated[int | None, typer.Option("--before", min=1, help="Entries older than this id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON.")] = False,
) -> None:
    """The tenant's audit log, newest first (admin keys)."""
    with make_client() as client:
        page = client.audit_log(before=before, limit=limit, action=action, actor=actor, since=since)
    if as_json:
        print_json(page.model_dump(mode="json"))
        return
    if not page.items:
        console.print("no entries: actions on keys, jobs, pipelines, nodes, webhooks and budgets appear here")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("ID", "AT", "ACTOR", "ACTION", "TARGET", "STATUS", "FROM"):
        table.add_column(column, overflow="fold")
    for e in page.items:
        table.add_row(
            str(e.id),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(f"{e.actor_kind} {e.actor_id}"),
            escape(e.action),
            escape(e.target or ""),
            str(e.status_code),
            escape(e.client_ip or ""),
        )
    console.print(table)
    if page.next_before is not None:
        console.print(f"[dim]older: nexa audit-log --before {page.next_before}[/]")
