"""The audit log: every state-changing action on the API, who took it, when and from where."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class AuditEntry(BaseModel):
    """One action (``GET /v1/audit-log``). Rows are append-only: nothing updates or deletes them."""

    model_config = ConfigDict(extra="ignore")

    id: int = Field(description="Increasing; pass the last one as `before` for the next page.")
    at: datetime
    tenant_id: str | None = Field(None, max_length=40, description="The tenant acted on (the caller's).")
    actor_kind: str = Field(max_length=16, description="`key` (an API key) or `worker` (a node's token).")
    actor_id: str = Field(max_length=64, description="The key id (`key_…`) or worker id (`wrk_…`).")
    action: str = Field(max_length=200, description="Method and route, e.g. `DELETE /v1/keys/{key_id}`.")
    target: str | None = Field(
        None, max_length=200, description="The id acted on or created, when there is one."
    )
    status_code: int = Field(description="The answer: 2xx done, 4xx refused (a refusal is recorded too).")
    client_ip: str | None = Field(None, max_length=64)
    user_agent: str | None = Field(None, max_length=200)


class AuditLogPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[AuditEntry] = Field(max_length=500)
    next_before: int | None = Field(None, description="Pass as `before` for older entries; null at the end.")
