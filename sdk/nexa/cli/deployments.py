"""``nexa deployments``: list, show and undeploy served models."""

from __future__ import annotations

from typing import Annotated

import typer

from nexa.cli.context import handle_errors, make_client
from nexa.cli.render import console, deployments_table, mapping_table, print_json

app = typer.Typer(help="List, show and stop deployed models.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_deployments(
    running: Annotated[bool, typer.Option("--running", help="Only those still serving.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Deployments, newest first, with whether each still serves."""
    with make_client() as client:
        items = [d for d in client.list_deployments(limit=limit) if not running or d.status == "running"]
    if as_json:
        print_json([d.model_dump(mode="json") for d in items])
    elif not items:
        console.print("no deployments" + (" serving" if running else "") + ": nexa deploy ckpt_… --wait")
    else:
        console.print(deployments_table(items))


@app.command("show")
@handle_errors
def show(
    deployment_id: Annotated[str, typer.Argument(help="Deployment id (dp_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One deployment: where to call it, and its state."""
    with make_client() as client:
        deployment = client.get_deployment(deployment_id)
    if as_json:
        print_json(deployment.model_dump(mode="json"))
    else:
        console.print(mapping_table(deployment.model_dump(mode="json", exclude_none=True)))


@app.command("undeploy")
@handle_errors
def undeploy(deployment_id: Annotated[str, typer.Argument(help="Deployment id (dp_…).")]) -> None:
    """Stop serving: the process exits within a few seconds."""
    with make_client() as client:
        deployment = client.undeploy(deployment_id)
    console.print(f"{deployment.deployment_id}: {deployment.status}")
