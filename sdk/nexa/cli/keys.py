"""``nexa keys``: create, list, revoke API keys."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from nexa import config
from nexa.cli.context import EXIT_USAGE, OPTIONS, CliError, handle_errors, make_client
from nexa.cli.render import console, err_console, keys_table, print_json
from nexa.contracts import ApiKeyCreated
from nexa.contracts.keys import Role

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def _create_in_database(database_url: str, tenant: str, name: str, role: Role) -> ApiKeyCreated:
    try:
        from nexa_gateway.cli_admin import create_key
    except ImportError as exc:
        raise CliError(
            f"--database-url needs the gateway package ({exc}): pip install 'nexa-forge[gateway]'", EXIT_USAGE
        ) from exc
    created = create_key(database_url, tenant, name, role.value)
    return ApiKeyCreated.model_validate(created.model_dump() if hasattr(created, "model_dump") else created)


def show_new_key(created: ApiKeyCreated) -> None:
    """Print a new key once, with the warning that it will not be shown again."""
    console.print(f"[bold]{created.key}[/]", soft_wrap=True)
    err_console.print(
        f"[yellow]key {created.key_id} ({created.name}) for tenant {created.tenant_id}: "
        "store it now, it will not be shown again.[/]"
    )


@app.command("create")
@handle_errors
def create(
    name: Annotated[str, typer.Option("--name", help="A name to recognise the key by.")] = "default",
    expires_in_days: Annotated[int | None, typer.Option("--expires-in-days", min=1)] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Write the key straight into this gateway database (bootstrap)."),
    ] = None,
    tenant: Annotated[
        str, typer.Option("--tenant", help="With --database-url: the tenant to create it for.")
    ] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (includes the key).")] = False,
    role: Annotated[
        Role | None,
        typer.Option(
            "--role",
            help="member or admin (default member; admin with --database-url); platform_admin only with --database-url.",
        ),
    ] = None,
) -> None:
    """Create an API key; it is printed once."""
    if database_url:
        if expires_in_days is not None:
            raise CliError("--expires-in-days is not available with --database-url", EXIT_USAGE)
        created = _create_in_database(database_url, tenant, name, role or Role.admin)
    else:
        with make_client() as client:
            created = client.create_key(name, expires_in_days=expires_in_days, role=role or Role.member)
    if as_json:
        print_json(created.model_dump(mode="json"))
        err_console.print("[yellow]store the key now, it will not be shown again.[/]")
    else:
        show_new_key(created)


@app.command("env")
@handle_errors
def env() -> None:
    """Shell lines that export this CLI's gateway URL and key: eval "$(nexa keys env)"."""
    url, key = config.resolve(OPTIONS.api_key, OPTIONS.base_url)
    if not key:
        raise CliError(
            "no API key configured: start a local Nexa with `nexa up`, or pass --api-key", EXIT_USAGE
        )
    print(f"export {config.ENV_BASE_URL}={shlex.quote(url)}")
    print(f"export {config.ENV_API_KEY}={shlex.quote(key)}")


@app.command("list")
@handle_errors
def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Your tenant's keys (never their secrets)."""
    with make_client() as client:
        keys = client.list_keys()
    if as_json:
        print_json([key.model_dump(mode="json") for key in keys])
    else:
        console.print(keys_table(keys))


@app.command("revoke")
@handle_errors
def revoke(key_id: Annotated[str, typer.Argument(help="Key id (key_…).")]) -> None:
    """Revoke a key: it is refused from now on."""
    with make_client() as client:
        info = client.revoke_key(key_id)
    console.print(f"revoked {info.key_id} ({info.name})")
