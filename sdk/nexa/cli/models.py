"""``nexa models``: upload a model directory as a base checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nexa.cli.context import EXIT_USAGE, CliError, handle_errors, make_client
from nexa.cli.render import console, print_json

app = typer.Typer(help="Upload model directories.", no_args_is_help=True)


@app.command("upload")
@handle_errors
def upload(
    path: Annotated[
        Path, typer.Argument(help="A model directory: config.json, safetensors weights, tokenizer.")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: the directory's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Upload a model directory; prints the ckpt_… id to use as --model, --teacher or a checkpoint."""
    path = path.expanduser()
    if not (path / "config.json").is_file():
        raise CliError(f"{path} is not a model directory (no config.json)", EXIT_USAGE)
    with make_client() as client:
        model = client.upload_model(path, name=name)
    if as_json:
        print_json(model.model_dump(mode="json"))
        return
    console.print(f"uploaded {model.name} ({len(model.files)} files, {model.size_bytes} bytes) as")
    console.print(model.checkpoint_id, soft_wrap=True)
    console.print(f"train from it: nexa train DATASET --model {model.checkpoint_id}", soft_wrap=True)
