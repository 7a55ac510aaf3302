"""API keys and the error body every 4xx/5xx response carries."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from nexa.contracts.common import StrictModel


class ApiKeyCreate(StrictModel):
    name: str = Field("default", min_length=1, max_length=200)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class KeyPrincipal(BaseModel):
    """Who a key is: what ``GET /v1/keys/self`` answers (deployed endpoints use it to check callers)."""

    model_config = ConfigDict(extra="ignore")

    key_id: str
    tenant_id: str


class ApiKeyInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, enough to recognise it.")
    tenant_id: str
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
