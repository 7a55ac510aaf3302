"""Gateway settings, read from ``NEXA_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nexa import config
from nexa.contracts.billing import PriceBook
from nexa.contracts.catalog import CatalogEntry


def nexa_home() -> Path:
    """``$NEXA_HOME``, else ``~/.nexa``: where a standalone Nexa keeps its state (``nexa.config`` reads it)."""
    return config.nexa_home()


class Settings(BaseSettings):
    """Everything the gateway is configured with; one instance per app."""

    model_config = SettingsConfigDict(env_prefix="NEXA_", extra="ignore")

    backend: Literal["sql", "kubernetes"] = Field(
        "sql", description="Where jobs live: the SQL queue with pull workers, or NexaJobs in Kubernetes."
    )
    kube_namespace_prefix: str = "nexa-"
    kubeconfig: str | None = None
    kube_create_namespaces: bool = True
    kube_s3_secret: str | None = Field(
        None,
        description="Secret in the gateway's namespace copied into each tenant namespace it ensures "
        "(the operator's NEXA_OPERATOR_S3_SECRET); unset copies nothing.",
    )
    kube_namespace: str | None = Field(
        None,
        description="The gateway's own namespace, where kube_s3_secret is read; unset: the pod's "
        "service-account namespace.",
    )
    database_url: str = Field(default_factory=lambda: f"sqlite:///{nexa_home() / 'nexa.db'}")
    artifact_root: Path = Field(default_factory=lambda: nexa_home() / "artifacts")
    s3_endpoint: str | None = None
    s3_bucket: str = "nexa-artifacts"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = False
    s3_prefix: str = ""
    allowed_dataset_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="The ceiling for local paths: tenants read only granted roots inside these; empty: none.",
    )
    bootstrap_grant_local_roots: bool = Field(
        False,
        description="Grant the bootstrap tenant every allowed_dataset_roots entry (what `nexa up` does).",
    )
    manifest_signing: bool | None = Field(
        None,
        description="Sign accepted artifacts with the platform key and refuse unsigned ones as inputs and "
        "downloads; unset: on in standalone (sql backend) and in cluster mode with attempt tokens, else off.",
    )
    platform_signing_key: str | None = Field(
        None,
        description="The platform's Ed25519 seed (64 hex); unset: kept in $NEXA_HOME/platform-signing.key.",
    )
    endpoint_key_secret: str | None = Field(
        None,
        description="The secret deployments' endpoint keys are derived from (shared by every gateway replica); "
        "unset: kept in $NEXA_HOME/endpoint-keys.secret.",
    )
    model_catalog: str | None = Field(
        None,
        description="Model names users may write (e.g. 'Mistral-7B'), over the built-in ones: a JSON object "
        "of name → Hugging Face id, absolute model directory, or {base_url, model, api_key_env}; or the path "
        "of a JSON file holding one (nexa.contracts.catalog).",
    )
    default_teacher: str | None = Field(
        None,
        max_length=500,
        description="The teacher of a distill or generate request that names none: a catalog name, "
        "provider/model, dp_… or a model path; unset: such requests answer 422 teacher_required.",
    )
    price_book: str = Field(
        "spec",
        min_length=1,
        max_length=1000,
        description="What usage is charged at: 'spec' (the SPEC's per-job prices), 'forge' (Forge's resource "
        "rates), or the path of a JSON price book (nexa.contracts.billing.PriceBook) with dated versions.",
    )
    stripe_api_key: str | None = Field(
        None,
        description="Stripe secret key: usage is sent to Stripe as meter events (the local ledger stays the "
        "source of truth); unset: no Stripe at all.",
    )
    stripe_api_base: str | None = Field(
        None, description="Stripe's API root, for stripe-mock or a proxy; Stripe's own when unset."
    )
    stripe_webhook_secret: str | None = Field(
        None, description="The webhook endpoint's signing secret (whsec_…); unset: the webhook answers 404."
    )
    stripe_webhook_tolerance_seconds: int = Field(
        300, ge=1, le=86400, description="Webhook signatures older than this are refused (replay protection)."
    )
    stripe_sync_interval_seconds: float = Field(
        30.0, ge=0, description="How often new usage is sent to Stripe; 0 turns the background sync off."
    )
    default_model: str = Field(
        "Mistral-7B",
        min_length=1,
        max_length=500,
        description="The base model of a train request that names none (the SPEC's default).",
    )
    public_url: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://",
        description="The gateway's externally visible base URL (e.g. https://nexa.example.com): deployments are "
        "then offered as {public_url}/v1/inference/{deployment_id}, the deploy result's inference_url.",
    )
    worker_secret: str | None = None
    attempt_token_secret: str | None = Field(
        None,
        description="Shared with the operator (NEXA_OPERATOR_ATTEMPT_TOKEN_SECRET): engine pods holding an "
        "attempt token it signed reach their tenant's artifacts through the gateway, with no storage keys.",
    )
    worker_store_access: Literal["auto", "gateway", "direct"] = Field(
        "auto",
        description="How workers reach the artifact store: 'gateway' through scoped /v1/workers/jobs/{id}/store "
        "calls (no storage credentials on the worker), 'direct' with their own credentials; 'auto': "
        "tenants' nodes (node tokens) through the gateway, the platform's own workers direct.",
    )
    worker_upload_max_bytes: int = Field(
        64 << 30, ge=1, description="The largest artifact a worker may upload through the gateway."
    )
    bootstrap_api_key: str | None = None
    lease_seconds: int = Field(30, ge=1)
    heartbeat_seconds: int = Field(10, ge=1)
    reaper_interval_seconds: float = Field(1.0, gt=0)
    require_node_signatures: bool = Field(
        False,
        description="Refuse workers that register no Ed25519 key. A worker that registered one must sign "
        "every final report with it, whatever this says.",
    )
    spot_check_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of unverified jobs finished by a node below spot_check_below_reputation that the "
        "platform re-runs on another node, at its own cost, to check the node (docs/mesh.md).",
    )
    spot_check_below_reputation: float = Field(
        0.6, ge=0, le=1, description="Nodes below this reputation are spot-checked (0.5: a new node)."
    )
    holdback_below_reputation: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Nodes below this reputation take unverified work only once it has waited "
        "holdback_seconds, so reputable nodes get it first.",
    )
    holdback_seconds: float = Field(30.0, ge=0, description="See holdback_below_reputation.")
    credit_tier_rates: dict[str, float] = Field(
        default_factory=lambda: {"cpu": 1.0, "consumer-gpu": 1.2, "hpc": 1.5},
        description="Credits per TFLOP of verified work, by the node's confirmed tier (docs/mesh.md).",
    )
    credit_slack: float = Field(
        1.5,
        ge=1,
        description="A replica is credited for at most this many times the median work of the replicas "
        "that agreed with it.",
    )
    lost_lease_penalty: float = Field(1.0, ge=0, description="Credits taken from a node per lost lease.")
    reputation_half_life_days: float = Field(30.0, gt=0, description="How fast a node's record fades.")
    schedulability_interval_seconds: float = Field(
        10.0,
        ge=0,
        description="How often pending jobs are checked against the live workers; one no worker fits says "
        "'unschedulable' with the reason. 0 turns the check off.",
    )
    log_archive_interval_seconds: float = Field(
        5.0,
        ge=0,
        description="How often finished jobs' logs are written to the artifact store as files "
        "(logs_uri); 0 turns the archive off.",
    )
    deployment_meter_interval_seconds: float = Field(
        30.0,
        ge=0,
        description="How often stopped deployments' running time is metered (deployment_hours, by the second); "
        "0 turns deployment metering off.",
    )
    storage_meter_interval_seconds: float = Field(
        3600.0,
        ge=0,
        le=3600,
        description="How often stored artifacts are metered (storage_gb_months, once per tenant and hour) and "
        "retention runs; ticks also fall at each hour's start, so no hour is missed; 0 turns both off.",
    )
    artifact_retention_days: int = Field(
        0,
        ge=0,
        le=36500,
        description="Delete artifacts registered more than this many days ago, unless something still needs "
        "them (an artifact made from them, an unfinished job, a serving deployment); 0 keeps them forever.",
    )
    rate_limit_per_minute: int = Field(600, ge=1)
    max_upload_bytes: int = Field(1 << 30, ge=1)
    max_request_bytes: int = Field(
        4 << 20,
        ge=1024,
        description="The largest request body outside dataset and artifact uploads (413 past it).",
    )
    min_free_disk_bytes: int = Field(
        256 << 20,
        ge=0,
        description="Below this much free disk where the gateway writes, /readyz says not ready.",
    )
    key_cache_seconds: float = Field(5.0, ge=0)
    log_poll_seconds: float = Field(
        60.0,
        gt=0,
        description="Log streams wake when a job changes; this is only their safety re-read for a missed "
        "signal.",
    )
    status_cache_seconds: float = Field(
        1.0, ge=0, description="How long another replica's change to a job may go unseen by this one."
    )
    # ---- webhooks (services.webhooks)
    webhook_allowlist: str = Field(
        "",
        description="Comma-separated hosts (`hooks.example.com`, `*.example.com`) and networks "
        "(`10.1.0.0/16`, `127.0.0.1`) webhooks may go to besides public addresses; private, loopback and "
        "link-local addresses are refused unless listed here.",
    )
    webhook_only_allowlist: bool = Field(
        False, description="Refuse every webhook URL the allowlist does not name, public ones too."
    )
    webhook_interval_seconds: float = Field(
        1.0, ge=0, description="Idle poll of the webhook outbox and sender; 0 turns webhooks off."
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="One delivery try's HTTP timeout.")
    audit_flush_seconds: float = Field(
        0.5, gt=0, description="How often the audit log's queued entries are written (at most this late)."
    )
    max_active_pipelines_per_tenant: int = Field(
        100,
        ge=1,
        description="Unfinished pipelines a tenant may have at once (429 too_many_pipelines past it).",
    )
    pipeline_interval_seconds: float = Field(
        2.0,
        ge=0,
        description="Safety-net poll of running pipelines (a job's change wakes the advancer at once); "
        "0 turns the advancer off.",
    )
    webhook_retry_scale: float = Field(
        1.0, gt=0, description="Multiplies the retry schedule (5 s … ~24 h); tests make it small."
    )
    webhook_disable_after_failures: int = Field(
        50, ge=1, description="Consecutive failed tries after which an endpoint is disabled (with the next)."
    )
    webhook_disable_after_seconds: float = Field(
        86400.0, ge=0, description="… and only once it has been failing for at least this long."
    )
    webhook_outbox_settle_seconds: float = Field(
        5.0, ge=0, description="How long a gap in job event ids is waited on (a transaction still open)."
    )
    # ---- the web console (routes/console.py)
    console_session_hours: float = Field(
        12.0,
        gt=0,
        le=24 * 30,
        description="How long a console sign-in lasts before it asks for the key again.",
    )

    @field_validator("allowed_dataset_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        # The env form is a PATH-like list; the Python form may already be a list.
        if isinstance(value, str):
            return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]
        return value

    @field_validator("model_catalog")
    @classmethod
    def _readable_catalog(cls, value: str | None) -> str | None:
        from nexa.contracts.catalog import parse_catalog

        parse_catalog(value)  # a bad catalog stops the gateway at start, with the entry named
        return value

    @field_validator("price_book")
    @classmethod
    def _readable_price_book(cls, value: str) -> str:
        from nexa_gateway.services.pricebooks import load_price_book

        load_price_book(value)  # a bad price book stops the gateway at start, saying why
        return value

    def prices(self) -> PriceBook:
        from nexa_gateway.services.pricebooks import load_price_book

        return load_price_book(self.price_book)

    def catalog(self) -> dict[str, CatalogEntry]:
        from nexa.contracts.catalog import parse_catalog

        return parse_catalog(self.model_catalog)

    @field_validator("bootstrap_api_key")
    @classmethod
    def _well_formed_key(cls, value: str | None) -> str | None:
        from nexa_gateway.services.keys import well_formed

        if value is not None and not well_formed(value):
            raise ValueError("not a well-formed nexa_ API key (generate one with `nexa keys create`)")
        return value

    def protected_paths(self) -> list[Path]:
        """Nexa's own files: never readable as a tenant's local path, whatever is granted."""
        paths = [nexa_home(), self.artifact_root]
        if self.is_sqlite and ":///" in self.database_url:
            database = Path(self.database_url.split(":///", 1)[1])
            # The database and SQLite's side files, which hold the same rows.
            paths += [
                database,
                *(database.with_name(database.name + s) for s in ("-wal", "-shm", "-journal")),
            ]
        return paths

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
