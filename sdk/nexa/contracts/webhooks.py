"""Webhook endpoints and their deliveries: what a tenant subscribes to and what Nexa sent it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nexa.contracts.common import StrictModel


class WebhookEventType(StrEnum):
    """The events an endpoint can subscribe to (``*`` is every one)."""

    job_created = "job.created"
    job_running = "job.running"  # a worker claimed an attempt
    job_retrying = "job.retrying"  # an attempt failed and the job waits for another
    job_completed = "job.completed"
    job_failed = "job.failed"
    job_cancelled = "job.cancelled"
    pipeline_step_completed = (
        "pipeline.step_completed"  # a step's job completed (or its outputs came from the cache)
    )
    pipeline_step_failed = (
        "pipeline.step_failed"  # a step's job failed after its retries, or its gate did not hold
    )
    pipeline_waiting_approval = "pipeline.waiting_approval"  # a step waits for POST …/steps/{step}/approve
    pipeline_completed = "pipeline.completed"
    pipeline_failed = "pipeline.failed"
    pipeline_cancelled = "pipeline.cancelled"
    webhook_test = "webhook.test"  # only sent by ``POST /v1/webhooks/{id}/test``
    all = "*"


class WebhookStatus(StrEnum):
    enabled = "enabled"
    disabled = "disabled"


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its first try or its next retry
    delivered = "delivered"  # the endpoint answered 2xx
    failed = "failed"  # every retry failed, or the endpoint was disabled


class WebhookCreate(StrictModel):
    url: str = Field(
        min_length=1, max_length=2000, description="An http(s) URL the operator's policy allows."
    )
    events: list[WebhookEventType] = Field(
        default_factory=lambda: [WebhookEventType.all],
        min_length=1,
        max_length=16,
        description="Event types to send; `*` (the default) is all of them.",
    )
    description: str = Field("", max_length=500)


class WebhookEndpoint(BaseModel):
    """A tenant's webhook endpoint; ``status`` is ``disabled`` (with ``disabled_reason``) after repeated failures."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=40)
    url: str = Field(max_length=2000)
    events: list[str] = Field(max_length=16)
    description: str = Field("", max_length=500)
    status: WebhookStatus
    disabled_reason: str | None = Field(None, max_length=1000)
    consecutive_failures: int = 0
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(
        max_length=200,
        description="The signing secret (`whsec_` + base64), shown once: verify each delivery with it.",
    )


class WebhookDelivery(BaseModel):
    """One event sent (or to be sent) to one endpoint; ``id`` is the ``webhook-id`` header, the same on every retry."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=40)
    endpoint_id: str = Field(max_length=40)
    event_type: str = Field(max_length=40)
    job_id: str | None = Field(None, max_length=40)
    status: DeliveryStatus
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(None, max_length=1000)
    next_attempt_at: datetime | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    payload: dict[str, Any] | None = None


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDelivery] = Field(max_length=500)
