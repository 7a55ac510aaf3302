"""The ``nexa`` command: local Nexa, job submission, jobs, pipelines, lineage, datasets, keys, workers."""

from __future__ import annotations

from typing import Annotated

import typer

from nexa.cli import (
    admin,
    artifacts,
    auditlog,
    billing,
    datasets,
    demo,
    deployments,
    jobs,
    keys,
    lineage,
    local,
    mesh,
    models,
    pipelines,
    store,
    submit,
    webhooks,
    worker,
    workers,
)
from nexa.cli.context import OPTIONS

app = typer.Typer(
    name="nexa",
    help="Nexa: run audit, distill, generate, train, evaluate and deploy as remote jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Gateway URL (default: $NEXA_BASE_URL, then `nexa up`'s config)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="API key (default: $NEXA_API_KEY, then `nexa up`'s config)."),
    ] = None,
) -> None:
    """Nexa: run audit, distill, generate, train, evaluate and deploy as remote jobs."""
    OPTIONS.base_url = base_url
    OPTIONS.api_key = api_key


app.command("up")(local.up)
app.command("down")(local.down)
app.command("status")(local.status)
submit.register(app)
app.add_typer(jobs.app, name="jobs")
app.add_typer(datasets.app, name="datasets")
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(models.app, name="models")
app.command("billing")(billing.billing)
app.add_typer(workers.app, name="workers")
app.add_typer(deployments.app, name="deployments")
app.add_typer(keys.app, name="keys")
app.add_typer(admin.app, name="admin")
app.add_typer(store.app, name="store")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(pipelines.app, name="pipeline")
app.command("lineage")(lineage.lineage)
app.command("audit-log")(auditlog.audit_log)
app.command("worker")(worker.worker)
app.command("leaderboard")(mesh.leaderboard)
workers.app.command("credits")(mesh.credits)
jobs.app.command("verification")(mesh.verification)
app.command("demo")(demo.demo)


def main() -> None:
    """Entry point of the ``nexa`` console script."""
    app()


if __name__ == "__main__":
    main()
