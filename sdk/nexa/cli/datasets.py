"""``nexa datasets``: upload, list and delete datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nexa.cli.artifacts import FORCE_HELP, run_deletion
from nexa.cli.context import EXIT_USAGE, CliError, handle_errors, make_client
from nexa.cli.render import console, datasets_table, print_json

app = typer.Typer(help="Upload, list and delete datasets.", no_args_is_help=True)

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".csv": "csv"}


@app.command("upload")
@handle_errors
def upload(
    path: Annotated[Path, typer.Argument(help="A .parquet, .jsonl or .csv file.")],
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: the file name).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Upload a file as a new dataset; prints its ds_… id."""
    path = path.expanduser()
    if not path.is_file():
        raise CliError(f"no such file: {path}", EXIT_USAGE)
    if path.suffix.lower() not in FORMATS:
        raise CliError(f"{path.name}: unsupported format; use one of {', '.join(FORMATS)}", EXIT_USAGE)
    with make_client() as client:
        dataset = client.upload_dataset(path, name=name)
    if as_json:
        print_json(dataset.model_dump(mode="json"))
    else:
        console.print(datasets_table([dataset]))
        console.print(f"audit it: nexa audit {dataset.dataset_id} --wait")


@app.command("list")
@handle_errors
def list_datasets(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Datasets, newest first."""
    with make_client() as client:
        items = list(client.list_datasets(limit=limit))
    if as_json:
        print_json([ds.model_dump(mode="json") for ds in items])
    elif not items:
        console.print("no datasets yet: nexa datasets upload FILE")
    else:
        console.print(datasets_table(items))


@app.command("delete")
@handle_errors
def delete(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id (ds_…).")],
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete a dataset; refused, naming them, while anything depends on it."""
    run_deletion(lambda client: client.delete_dataset(dataset_id, force=force), as_json=as_json)
