"""``nexa workers``: the node registry (``nexa worker`` runs one)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nexa.cli.context import handle_errors, make_client
from nexa.cli.render import ago, console, print_json

app = typer.Typer(
    help="List, drain and revoke the nodes of the fleet you may see (`nexa worker` runs one).",
    no_args_is_help=True,
)
STATE_STYLES = {"busy": "green", "idle": "cyan", "lost": "red", "draining": "yellow", "revoked": "red"}


@app.command("list")
@handle_errors
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Your tenant's nodes (every node with a platform admin key): state, tier, hardware, last heartbeat."""
    with make_client() as client:
        workers = client.list_workers()
    if as_json:
        print_json([w.model_dump(mode="json") for w in workers])
        return
    if not workers:
        console.print("no nodes you can see: register one with `nexa worker --node-token …`")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("WORKER ID", "NAME", "STATE", "TIER", "CPU", "MEMORY", "GPUS", "HEARTBEAT", "RUNNING"):
        table.add_column(column, no_wrap=column in ("WORKER ID", "STATE"))
    for w in workers:
        hw = w.hardware
        gpus = f"{hw.get('gpus', 0)} {hw.get('gpu_type') or ''}".strip()
        style = STATE_STYLES.get(w.state, "")
        table.add_row(
            w.worker_id,
            escape(w.name),
            f"[{style}]{w.state}[/]" if style else w.state,
            w.tier or "-",
            str(hw.get("cpu_count", "-")),
            f"{hw.get('memory_gb', '-')} GiB",
            gpus,
            ago(w.last_heartbeat_at),
            "\n".join(w.running_jobs) or "-",
        )
    console.print(table)


@app.command("show")
@handle_errors
def show(worker_id: Annotated[str, typer.Argument(help="The worker's id.")]) -> None:
    """Everything the registry knows about one node, as JSON."""
    with make_client() as client:
        print_json(client.get_worker(worker_id).model_dump(mode="json"))


WorkerId = Annotated[str, typer.Argument(help="The worker's id (wrk_…).")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept with the node's status).")]


@app.command("drain")
@handle_errors
def drain(worker_id: WorkerId, reason: Reason = "") -> None:
    """Stop handing the node new jobs; what it runs finishes."""
    with make_client() as client:
        node = client.drain_worker(worker_id, reason=reason)
    console.print(f"{node.worker_id} ({escape(node.name)}) is {node.state}: it claims nothing new")


@app.command("resume")
@handle_errors
def resume(worker_id: WorkerId) -> None:
    """Let a drained node claim jobs again."""
    with make_client() as client:
        node = client.resume_worker(worker_id)
    console.print(f"{node.worker_id} ({escape(node.name)}) is {node.state}")


@app.command("revoke")
@handle_errors
def revoke(worker_id: WorkerId, reason: Reason = "") -> None:
    """Cut the node off for good: its token and key are refused, its running attempts go to others."""
    with make_client() as client:
        node = client.revoke_worker(worker_id, reason=reason)
    console.print(f"{node.worker_id} ({escape(node.name)}) is {node.state}; its key cannot register again")
