"""Administration straight against the database, for bootstrapping before any key exists."""

from __future__ import annotations

from nexa.contracts import ApiKeyCreated
from nexa_gateway.db import Database
from nexa_gateway.services.keys import create_api_key


def create_key(database_url: str, tenant: str = "default", name: str = "default") -> ApiKeyCreated:
    """Create an API key for ``tenant`` (created if new) directly in the database at ``database_url``."""
    db = Database(database_url)
    try:
        db.create_schema()
        with db.session() as session:
            return create_api_key(session, tenant_name=tenant, name=name)
    finally:
        db.dispose()
