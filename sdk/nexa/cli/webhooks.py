"""``nexa webhooks``: endpoints that receive job events, their delivery logs, redelivery."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table

from nexa.cli.context import handle_errors, make_client
from nexa.cli.render import ago, console, err_console, print_json
from nexa.contracts.webhooks import WebhookDelivery, WebhookEndpoint

app = typer.Typer(
    help="Webhook endpoints for job events: create, list, deliveries, redeliver.", no_args_is_help=True
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _endpoints_table(endpoints: Iterable[WebhookEndpoint]) -> Table:
    table = Table("ID", "URL", "EVENTS", "STATUS", "CREATED")
    for e in endpoints:
        status = "[green]enabled[/]" if e.status == "enabled" else f"[red]disabled[/] ({e.disabled_reason})"
        table.add_row(e.id, e.url, ",".join(e.events), status, ago(e.created_at))
    return table


def _deliveries_table(deliveries: Iterable[WebhookDelivery]) -> Table:
    table = Table("ID", "EVENT", "JOB", "STATUS", "ATTEMPTS", "LAST", "CREATED")
    for d in deliveries:
        last = str(d.last_status_code or "") or (d.last_error or "")
        table.add_row(
            d.id, d.event_type, d.job_id or "", d.status.value, str(d.attempts), last[:60], ago(d.created_at)
        )
    return table


WebhookId = Annotated[str, typer.Argument(help="Webhook id (wh_…).")]


@app.command("create")
@handle_errors
def create(
    url: Annotated[str, typer.Argument(help="The http(s) URL to POST events to.")],
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--event", "-e", help="An event type (job.completed, job.failed, …); repeat; default: all."
        ),
    ] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create an endpoint; its signing secret is printed once."""
    with make_client() as client:
        created = client.create_webhook(url, events=events or ["*"], description=description)
    if as_json:
        print_json(created.model_dump(mode="json"))
    else:
        console.print(f"[bold]{created.secret}[/]", soft_wrap=True)
        err_console.print(
            f"[yellow]webhook {created.id}: store the signing secret now, it will not be shown again.[/]"
        )


@app.command("list")
@handle_errors
def list_endpoints(as_json: JsonOption = False) -> None:
    """Your tenant's endpoints and their status."""
    with make_client() as client:
        endpoints = client.list_webhooks()
    if as_json:
        print_json([e.model_dump(mode="json") for e in endpoints])
    else:
        console.print(_endpoints_table(endpoints))


@app.command("deliveries")
@handle_errors
def deliveries(
    webhook_id: WebhookId,
    status: Annotated[str | None, typer.Option("--status", help="pending, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    as_json: JsonOption = False,
) -> None:
    """An endpoint's delivery log, newest first."""
    with make_client() as client:
        items = client.webhook_deliveries(webhook_id, status=status, limit=limit)
    if as_json:
        print_json([d.model_dump(mode="json") for d in items])
    else:
        console.print(_deliveries_table(items))


@app.command("redeliver")
@handle_errors
def redeliver(
    webhook_id: WebhookId,
    delivery_id: Annotated[str, typer.Argument(help="Delivery id (msg_…), the webhook-id header.")],
) -> None:
    """Send a delivery again now (same webhook-id and body)."""
    with make_client() as client:
        delivery = client.redeliver_webhook(webhook_id, delivery_id)
    console.print(f"queued {delivery.id} ({delivery.event_type}) again")


@app.command("enable")
@handle_errors
def enable(webhook_id: WebhookId) -> None:
    """Re-enable an endpoint disabled after repeated failures."""
    with make_client() as client:
        endpoint = client.enable_webhook(webhook_id)
    console.print(f"{endpoint.id} is {endpoint.status.value}")


@app.command("test")
@handle_errors
def test(webhook_id: WebhookId) -> None:
    """Send a webhook.test event."""
    with make_client() as client:
        delivery = client.test_webhook(webhook_id)
    console.print(f"queued {delivery.id} (webhook.test)")


@app.command("delete")
@handle_errors
def delete(webhook_id: WebhookId) -> None:
    """Delete an endpoint and its delivery log."""
    with make_client() as client:
        endpoint = client.delete_webhook(webhook_id)
    console.print(f"deleted {endpoint.id} ({endpoint.url})")
