"""``nexa store``: check the artifact store against the platform's signatures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nexa.cli.context import EXIT_USAGE, CliError, handle_errors
from nexa.cli.render import console, print_json

app = typer.Typer(help="Check the artifact store.", no_args_is_help=True)


@app.command("verify")
@handle_errors
def verify(
    database_url: Annotated[str, typer.Option("--database-url", help="The gateway's database URL.")],
    artifact_root: Annotated[
        Path | None,
        typer.Option(
            "--artifact-root", help="A local store's directory (default: NEXA_S3_* or NEXA_ARTIFACT_ROOT)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every artifact: signed, legacy (unsigned, from before signing), or refused; exit 1 if any is refused."""
    try:
        from nexa_gateway import cli_admin
    except ImportError as exc:
        raise CliError(
            f"nexa store needs the gateway package ({exc}): pip install 'nexa-forge[gateway]'", EXIT_USAGE
        ) from exc
    config: dict[str, Any] | None = {"kind": "local", "root": str(artifact_root)} if artifact_root else None
    report = cli_admin.verify_store(database_url, config)
    if as_json:
        print_json([{"artifact_id": a, "kind": k, "state": s} for a, k, s in report])
    else:
        for artifact_id, kind, state in report:
            console.print(f"{state:<10} {kind:<11} {artifact_id}")
        counts: dict[str, int] = {}
        for _, _, state in report:
            counts[state] = counts.get(state, 0) + 1
        console.print(json.dumps(counts) if counts else "no artifacts")
    if any(state in ("unsigned", "bad", "corrupt") for _, _, state in report):
        raise typer.Exit(1)
