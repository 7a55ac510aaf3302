"""``nexa admin``: platform administration straight against the gateway's database.

Grants say what a tenant may read besides its own artifacts: local directories
(inside the server's ``NEXA_ALLOWED_DATASET_ROOTS``) and S3 buckets. Nothing is
granted by default; ``nexa up`` grants its own tenant the user's directories.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nexa.cli.context import EXIT_USAGE, CliError, handle_errors
from nexa.cli.render import console, print_json

app = typer.Typer(help="Platform administration (needs the gateway's database).", no_args_is_help=True)

DatabaseUrl = Annotated[str, typer.Option("--database-url", help="The gateway's database URL.")]
Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]
LocalRoot = Annotated[str | None, typer.Option("--local-root", help="An absolute directory.")]
Bucket = Annotated[str | None, typer.Option("--s3-bucket", help="An S3 bucket name.")]


def _admin() -> Any:
    try:
        from nexa_gateway import cli_admin
    except ImportError as exc:
        raise CliError(
            f"nexa admin needs the gateway package ({exc}): pip install 'nexa-forge[gateway]'", EXIT_USAGE
        ) from exc
    return cli_admin


def _one(local_root: str | None, s3_bucket: str | None) -> tuple[str, str]:
    if (local_root is None) == (s3_bucket is None):
        raise CliError("pass exactly one of --local-root or --s3-bucket", EXIT_USAGE)
    return ("local_root", local_root) if local_root is not None else ("s3_bucket", str(s3_bucket))


@app.command("grant")
@handle_errors
def grant(
    database_url: DatabaseUrl, tenant: Tenant, local_root: LocalRoot = None, s3_bucket: Bucket = None
) -> None:
    """Let a tenant read a local directory or an S3 bucket."""
    kind, value = _one(local_root, s3_bucket)
    tenant_id, changed = _admin().change_grant(database_url, tenant, kind, value)
    console.print(f"{'granted' if changed else 'already granted'}: {kind} {value} to {tenant} ({tenant_id})")


@app.command("revoke")
@handle_errors
def revoke(
    database_url: DatabaseUrl, tenant: Tenant, local_root: LocalRoot = None, s3_bucket: Bucket = None
) -> None:
    """Take a grant back; jobs submitted afterwards, and running jobs' next reads, are refused."""
    kind, value = _one(local_root, s3_bucket)
    tenant_id, changed = _admin().change_grant(database_url, tenant, kind, value, revoke=True)
    console.print(f"{'revoked' if changed else 'was not granted'}: {kind} {value} for {tenant} ({tenant_id})")


@app.command("grants")
@handle_errors
def grants(
    database_url: DatabaseUrl,
    tenant: Tenant,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What a tenant may read besides its own artifacts."""
    roots, buckets = _admin().list_grants(database_url, tenant)
    if as_json:
        print_json({"local_roots": roots, "s3_buckets": buckets})
        return
    for root in roots:
        console.print(f"local_root  {root}")
    for bucket in buckets:
        console.print(f"s3_bucket   {bucket}")
    if not roots and not buckets:
        console.print(f"{tenant}: nothing granted (own artifacts only)")
