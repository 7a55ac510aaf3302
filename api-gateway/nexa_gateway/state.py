"""What one gateway app holds: settings, database, artifact store, metrics, limiter, key cache."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nexa.contracts.catalog import CatalogEntry
from nexa_gateway.db import Database
from nexa_gateway.metrics import GatewayMetrics
from nexa_gateway.ratelimit import RateLimiter
from nexa_gateway.services.auditlog import AuditQueue
from nexa_gateway.services.jobcache import JobCache
from nexa_gateway.services.jobsignals import JobSignals, announce
from nexa_gateway.services.keys import KeyResolver
from nexa_gateway.settings import Settings
from nexa_store.base import ArtifactStore
from nexa_store.signing import PlatformTrust, SigningKey

if TYPE_CHECKING:
    from nexa_gateway.backends.base import JobBackend

log = logging.getLogger("nexa.gateway")


@dataclass
class AppState:
    settings: Settings
    db: Database
    store: ArtifactStore
    metrics: GatewayMetrics
    limiter: RateLimiter
    keys: KeyResolver
    jobs: JobCache
    backend: JobBackend = field(init=False)
    # The platform's manifest-signing key (gateway only, never a worker's) and what it trusts.
    platform_key: SigningKey | None = None
    trust: PlatformTrust = field(default_factory=PlatformTrust)
    # What deployments' endpoint keys derive from (services.endpointkeys); standalone only.
    endpoint_secret: bytes | None = None
    signals: JobSignals = field(default_factory=JobSignals)
    # Audit entries noted by the middleware, written by a background task (services.auditlog).
    audit: AuditQueue = field(default_factory=AuditQueue)
    # The model catalog, read once from the settings (checked when they were loaded).
    catalog: dict[str, CatalogEntry] = field(init=False)
    # When the reaper next checks pending jobs against the live workers (monotonic seconds).
    next_schedulability_sweep: float = 0.0

    def __post_init__(self) -> None:
        self.catalog = self.settings.catalog()

    def job_changed(self, job_ids: Iterable[str]) -> None:
        """After a commit that changed these jobs: drop cached bodies and wake their log streams here
        and, with PostgreSQL, on every replica."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return
        self.jobs.invalidate(ids)
        self.signals.notify(ids)
        if self.db.is_postgres:
            try:
                with self.db.session() as session:
                    announce(session, ids)
            except Exception as exc:  # a missed signal costs latency only: streams re-read on a timer
                log.warning("could not announce a job change to other replicas: %s", type(exc).__name__)

    @property
    def allowed_roots(self) -> list[Path]:
        return [Path(p) for p in self.settings.allowed_dataset_roots]


def build_store(settings: Settings) -> ArtifactStore:
    """The artifact store the settings name: S3 when an endpoint is set, else a local directory."""
    if settings.s3_endpoint:
        from nexa_store.s3 import S3ArtifactStore

        return S3ArtifactStore(
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key or "",
            secret_key=settings.s3_secret_key or "",
            secure=settings.s3_secure,
            prefix=settings.s3_prefix,
        )
    from nexa_store.local import LocalArtifactStore

    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    return LocalArtifactStore(settings.artifact_root)
