"""API keys and the error body every 4xx/5xx response carries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nexa.contracts.common import StrictModel


class Role(StrEnum):
    """What a key may do. member: jobs, artifacts, deployments of its tenant. admin: also the tenant's
    keys. platform_admin: also every tenant's grants (local roots, buckets); made only by the operator."""

    member = "member"
    admin = "admin"
    platform_admin = "platform_admin"

    def at_least(self, other: Role) -> bool:
        order = (Role.member, Role.admin, Role.platform_admin)
        return order.index(self) >= order.index(other)


class ApiKeyCreate(StrictModel):
    name: str = Field("default", min_length=1, max_length=200)
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    role: Role = Field(
        Role.member,
        description="member or admin (admin keys only; a key never grants more than its own role).",
    )


class KeyPrincipal(BaseModel):
    """Who a key is: what ``GET /v1/keys/self`` answers (deployed endpoints use it to check callers)."""

    model_config = ConfigDict(extra="ignore")

    key_id: str
    tenant_id: str
    role: Role = Role.admin


class ApiKeyInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, enough to recognise it.")
    tenant_id: str
    role: Role = Role.admin
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = Field(description="Stable machine-readable error type, e.g. validation_error, not_found.")
    message: str
    field: str | None = Field(None, description="Dotted path of the offending field, when one is to blame.")
    errors: list[dict[str, str]] | None = Field(None, description="Every validation problem, when several.")


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error: ErrorDetail


class GrantChange(StrictModel):
    """A local root (an absolute directory inside the server's ceiling) or an S3 bucket for a tenant."""

    kind: Literal["local_root", "s3_bucket"]
    value: str = Field(min_length=1, max_length=1024)


class TenantGrants(BaseModel):
    """What a tenant may read besides its own artifacts."""

    model_config = ConfigDict(extra="ignore")

    tenant: str
    tenant_id: str
    local_roots: list[str] = Field(default_factory=list)
    s3_buckets: list[str] = Field(default_factory=list)


class NodeTokenCreate(StrictModel):
    name: str = Field("node", min_length=1, max_length=200, description="A name to recognise the token by.")


class NodeTokenInfo(BaseModel):
    """A node token: nodes registered with it belong to its tenant and run only that tenant's jobs."""

    model_config = ConfigDict(extra="ignore")

    token_id: str
    name: str
    prefix: str
    tenant_id: str
    created_at: datetime
    revoked_at: datetime | None = None


class NodeTokenCreated(NodeTokenInfo):
    token: str = Field(description="Pass to `nexa worker --secret` (or NEXA_WORKER_SECRET). Shown once.")
