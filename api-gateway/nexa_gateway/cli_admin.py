"""Administration straight against the database, for bootstrapping before any key exists."""

from __future__ import annotations

import os
from typing import Literal

from sqlalchemy import select

from nexa.contracts import ApiKeyCreated
from nexa.contracts.keys import Role
from nexa_gateway.db import Artifact, Database
from nexa_gateway.services import grants, signing
from nexa_gateway.services.keys import create_api_key, ensure_tenant
from nexa_gateway.settings import Settings


def create_key(
    database_url: str, tenant: str = "default", name: str = "default", role: str = "admin"
) -> ApiKeyCreated:
    """Create an API key for ``tenant`` (created if new) directly in the database at ``database_url``."""
    db = Database(database_url)
    try:
        db.create_schema()
        with db.session() as session:
            return create_api_key(session, tenant_name=tenant, name=name, role=Role(role))
    finally:
        db.dispose()


def change_grant(
    database_url: str,
    tenant: str,
    kind: Literal["local_root", "s3_bucket"],
    value: str,
    *,
    revoke: bool = False,
) -> tuple[str, bool]:
    """Grant (or revoke) ``value`` for tenant ``tenant`` (by name); returns (tenant id, changed)."""
    db = Database(database_url)
    try:
        db.create_schema()
        with db.session() as session:
            tenant_id = ensure_tenant(session, tenant).id
            if revoke:
                return tenant_id, grants.revoke(session, tenant_id, kind, value)
            before = grants.granted(session, tenant_id)
            # The server's ceiling is not known here; it is enforced again whenever the grant is used.
            grants.grant(
                session, Settings(database_url=database_url), tenant_id, kind, value, enforce_ceiling=False
            )
            return tenant_id, grants.granted(session, tenant_id) != before
    finally:
        db.dispose()


def list_grants(database_url: str, tenant: str) -> tuple[list[str], list[str]]:
    """(local roots, buckets) granted to tenant ``tenant`` (by name)."""
    db = Database(database_url)
    try:
        db.create_schema()
        with db.session() as session:
            return grants.granted(session, ensure_tenant(session, tenant).id)
    finally:
        db.dispose()


def verify_store(
    database_url: str, store_config: dict[str, object] | None = None
) -> list[tuple[str, str, str]]:
    """(artifact id, kind, state) for every committed artifact, judged by the platform's signing record.

    States: ``signed``, ``legacy`` (unsigned, from before signing: still readable),
    ``unsigned`` and ``bad`` (refused), ``corrupt`` (files differ from the manifest).
    """
    from nexa_store.base import ArtifactError, IntegrityError
    from nexa_store.factory import store_from_config, store_from_env

    db = Database(database_url)
    try:
        db.create_schema()
        with db.session() as session:
            trust = signing.read_trust(session)
            registered = dict(session.execute(select(Artifact.id, Artifact.created_at)).tuples().all())
    finally:
        db.dispose()
    store = store_from_config(store_config) if store_config else store_from_env(os.environ)
    report: list[tuple[str, str, str]] = []
    for kind in ("dataset", "checkpoint", "eval", "deployment"):
        for artifact_id in store.list_ids(kind):
            try:
                manifest = store.read_manifest(artifact_id, verify=True)
            except IntegrityError:
                report.append((artifact_id, kind, "corrupt"))
                continue
            except ArtifactError:
                continue
            # Legacy on the registry's word (when the gateway recorded it), never the manifest's own date.
            state = (
                trust.status(manifest, registered_at=registered.get(artifact_id))
                if trust.enabled
                else "unchecked"
            )
            report.append((artifact_id, kind, state))
    return report
