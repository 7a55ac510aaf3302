"""``nexa artifacts``: what depends on an artifact, and deleting it (storage is billed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from nexa.cli.context import handle_errors, make_client
from nexa.cli.render import console, dependents_table, err_console, print_deletion, print_json
from nexa.client import NexaClient
from nexa.contracts import ArtifactDependent, Deletion, ErrorCode
from nexa.errors import ConflictError

app = typer.Typer(help="See what depends on an artifact, and delete artifacts.", no_args_is_help=True)

FORCE_HELP = (
    "Delete even though other artifacts were made from it (they keep an input that is gone). "
    "Unfinished jobs and serving deployments still refuse it."
)


def dependents_in(exc: ConflictError) -> tuple[list[ArtifactDependent], dict[str, str]]:
    """The dependents a 409 ``artifact_in_use`` names in its ``errors``, and which artifact each needs."""
    found, needs = [], {}
    for item in exc.errors:
        dependent = item.get("dependent")
        if not dependent:
            continue
        found.append(
            ArtifactDependent(
                kind=item.get("kind", "artifact"),
                id=dependent,
                reason=item.get("message", ""),
                blocking=item.get("blocking") == "true",
            )
        )
        needs[dependent] = item.get("field", "")
    return found, needs


def run_deletion(delete: Callable[[NexaClient], Deletion], *, as_json: bool) -> None:
    """Send a delete; print what went, or (refused) the table of what depends on it, then the error."""
    with make_client() as client:
        try:
            done = delete(client)
        except ConflictError as exc:
            if exc.error_type == ErrorCode.artifact_in_use.value:
                found, needs = dependents_in(exc)
                if found:
                    several = len(set(needs.values())) > 1
                    err_console.print(dependents_table(found, needs if several else None))
            raise  # one red line and exit 1, from handle_errors
    if as_json:
        print_json(done.model_dump(mode="json"))
    else:
        print_deletion(done)


@app.command("dependents")
@handle_errors
def dependents(
    artifact_id: Annotated[str, typer.Argument(help="Artifact id (ds_…, ckpt_…, ev_…, dp_…, log_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What needs the artifact: artifacts made from it, unfinished jobs naming it, deployments serving it."""
    with make_client() as client:
        found = client.artifact_dependents(artifact_id)
    if as_json:
        print_json(found.model_dump(mode="json"))
    elif found.deletable:
        console.print(f"nothing depends on {found.artifact_id}: nexa artifacts delete {found.artifact_id}")
    else:
        console.print(dependents_table(found.dependents))
        if found.deletable_with_force:
            console.print(f"only artifacts need it: nexa artifacts delete {found.artifact_id} --force")
        else:
            console.print("cancel or wait for those jobs, undeploy those deployments, then delete it")


@app.command("delete")
@handle_errors
def delete(
    artifact_id: Annotated[str, typer.Argument(help="Artifact id (ds_…, ckpt_…, ev_…, dp_…, log_…).")],
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete an artifact and its files; refused, naming them, while anything depends on it."""
    run_deletion(lambda client: client.delete_artifact(artifact_id, force=force), as_json=as_json)
