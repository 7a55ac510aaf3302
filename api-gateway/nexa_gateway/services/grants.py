"""What each tenant may read beyond its own artifacts, and the resolver scope built from it.

A tenant reads its own artifacts always; local directories and S3 buckets only
when granted here. A local root can be granted only inside the server's ceiling
(``NEXA_ALLOWED_DATASET_ROOTS``): an operator decides what the machine exposes
at all, then which tenant sees which part. ``nexa up`` grants its own tenant the
user's home, working and temp directories; a server grants nothing by default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nexa.contracts.catalog import CatalogEntry
from nexa.contracts.refs import JobReference
from nexa.ids import is_id
from nexa_gateway.db import Artifact, Job, TenantGrant
from nexa_gateway.errors import ApiError
from nexa_gateway.services.endpointkeys import endpoint_key
from nexa_gateway.settings import Settings
from nexa_store.access import Access, protected_dirs, roots_within
from nexa_store.base import ArtifactStore
from nexa_store.signing import PlatformTrust

GrantKind = Literal["local_root", "s3_bucket"]


def granted(session: Session, tenant_id: str) -> tuple[list[str], list[str]]:
    """(local roots, buckets) granted to ``tenant_id``."""
    rows = session.execute(
        select(TenantGrant.kind, TenantGrant.value).where(TenantGrant.tenant_id == tenant_id)
    ).all()
    roots = sorted(v for k, v in rows if k == "local_root")
    buckets = sorted(v for k, v in rows if k == "s3_bucket")
    return roots, buckets


def effective_roots(settings: Settings, roots: list[str]) -> list[Path]:
    """The granted roots still inside the server's ceiling (a narrowed ceiling narrows every grant)."""
    return roots_within(roots, settings.allowed_dataset_roots)


def tenant_access(
    session: Session,
    settings: Settings,
    store: ArtifactStore,
    tenant_id: str,
    catalog: Mapping[str, CatalogEntry] | None = None,
) -> Access:
    """The resolver scope for ``tenant_id`` at submit: ownership from the registry table."""
    roots, buckets = granted(session, tenant_id)

    def owner(artifact_id: str) -> str | None:
        return session.scalar(select(Artifact.tenant_id).where(Artifact.id == artifact_id))

    return Access(
        tenant_id=tenant_id,
        local_roots=tuple(effective_roots(settings, roots)),
        s3_buckets=tuple(buckets),
        protected=protected_dirs(store, [Path(p) for p in settings.protected_paths()]),
        owner_of=owner,
        catalog=settings.catalog() if catalog is None else catalog,
    )


def endpoint_keys(
    session: Session, tenant_id: str, named: list[tuple[JobReference, str]], secret: bytes | None = None
) -> dict[str, str]:
    """The endpoint keys of the tenant's own deployments a job calls: the one capability it needs for them.

    A deployment's key derives from its deploy job (``services.endpointkeys``; a
    deployment from before that kept its key in the job's result); a job naming
    that deployment as its teacher gets the key with its claim, and nothing for
    anyone else's. ``named`` is ``referenced_artifacts`` of the job's spec.
    """
    keys: dict[str, str] = {}
    for ref, deployment_id in named:
        if ref.kind != "teacher" or not is_id(deployment_id, "dp"):
            continue
        row = session.execute(
            select(Job.result, Job.id)
            .join(Artifact, Artifact.job_id == Job.id)
            .where(Artifact.id == deployment_id, Artifact.tenant_id == tenant_id, Job.tenant_id == tenant_id)
        ).first()
        if row is None:
            continue
        key = (row[0] or {}).get("api_key")
        if not key and secret is not None:
            key = endpoint_key(secret, row[1])
        if isinstance(key, str):
            keys[deployment_id] = key
    return keys


def legacy_artifacts(
    session: Session, trust: PlatformTrust, named: list[tuple[JobReference, str]]
) -> list[str]:
    """The artifacts a job names that the registry recorded before signing began: readable unsigned."""
    ids = [artifact_id for _, artifact_id in named]
    if not trust.enabled or trust.since is None or not ids:
        return []
    rows = session.execute(select(Artifact.id, Artifact.created_at).where(Artifact.id.in_(ids))).all()
    return sorted(artifact_id for artifact_id, created in rows if created < trust.since)


def grant(
    session: Session,
    settings: Settings,
    tenant_id: str,
    kind: GrantKind,
    value: str,
    *,
    enforce_ceiling: bool = True,
) -> str:
    """Grant ``value`` to the tenant (idempotent); returns the stored form.

    The ceiling is checked here when the caller knows the server's settings, and
    always again at use (``effective_roots``), so a grant outside it is inert.
    """
    if kind == "local_root":
        real = Path(os.path.realpath(value))
        if not Path(value).is_absolute():
            raise ApiError(422, "validation_error", f"{value!r}: a local root must be an absolute path")
        if enforce_ceiling and not effective_roots(settings, [str(real)]):
            raise ApiError(
                422,
                "grant_outside_ceiling",
                f"{value!r} is outside the directories this server may read (NEXA_ALLOWED_DATASET_ROOTS)",
            )
        stored = str(real)
    else:
        stored = value.strip()
        if not stored or "/" in stored:
            raise ApiError(422, "validation_error", f"{value!r} is not a bucket name")
    exists = session.scalar(
        select(TenantGrant.id).where(
            TenantGrant.tenant_id == tenant_id, TenantGrant.kind == kind, TenantGrant.value == stored
        )
    )
    if exists is None:
        session.add(TenantGrant(tenant_id=tenant_id, kind=kind, value=stored))
        session.flush()
    return stored


def revoke(session: Session, tenant_id: str, kind: GrantKind, value: str) -> bool:
    stored = str(Path(os.path.realpath(value))) if kind == "local_root" else value.strip()
    result = session.execute(
        delete(TenantGrant).where(
            TenantGrant.tenant_id == tenant_id, TenantGrant.kind == kind, TenantGrant.value == stored
        )
    )
    return bool(getattr(result, "rowcount", 0))
