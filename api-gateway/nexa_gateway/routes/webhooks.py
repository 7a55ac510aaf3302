"""The caller's tenant's webhook endpoints and their delivery logs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from nexa.contracts.webhooks import (
    DeliveryStatus,
    WebhookCreate,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookEndpoint,
    WebhookEndpointCreated,
)
from nexa_gateway.deps import CurrentPrincipal, SessionDep, StateDep, TenantAdmin
from nexa_gateway.services import webhooks as svc

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EndpointId = Annotated[str, Path(min_length=1, max_length=64)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("", response_model=WebhookEndpointCreated, status_code=201)
def create_webhook(
    body: WebhookCreate, principal: TenantAdmin, session: SessionDep, state: StateDep
) -> WebhookEndpointCreated:
    """A webhook endpoint (admin keys only); its signing secret is in this answer only."""
    created = svc.create(session, state.settings, principal.tenant_id, body)
    session.commit()
    return created


@router.get("", response_model=list[WebhookEndpoint])
def list_webhooks(principal: CurrentPrincipal, session: SessionDep) -> list[WebhookEndpoint]:
    """The tenant's webhook endpoints and their status (never their secrets)."""
    return svc.list_endpoints(session, principal.tenant_id)


@router.get("/{webhook_id}", response_model=WebhookEndpoint)
def get_webhook(webhook_id: EndpointId, principal: CurrentPrincipal, session: SessionDep) -> WebhookEndpoint:
    """One endpoint: enabled, or disabled with the reason."""
    return svc.get(session, principal.tenant_id, webhook_id)


@router.delete("/{webhook_id}", response_model=WebhookEndpoint)
def delete_webhook(webhook_id: EndpointId, principal: TenantAdmin, session: SessionDep) -> WebhookEndpoint:
    """Delete an endpoint and its delivery log; nothing more is sent to it."""
    gone = svc.remove(session, principal.tenant_id, webhook_id)
    session.commit()
    return gone


@router.post("/{webhook_id}/enable", response_model=WebhookEndpoint)
def enable_webhook(
    webhook_id: EndpointId, principal: TenantAdmin, session: SessionDep, state: StateDep
) -> WebhookEndpoint:
    """Re-enable an endpoint that was disabled after repeated failures."""
    endpoint = svc.enable(session, state.settings, principal.tenant_id, webhook_id)
    session.commit()
    return endpoint


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList)
def webhook_deliveries(
    webhook_id: EndpointId,
    principal: CurrentPrincipal,
    session: SessionDep,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WebhookDeliveryList:
    """The endpoint's delivery log, newest first."""
    items = svc.deliveries(
        session, principal.tenant_id, webhook_id, status=status.value if status else None, limit=limit
    )
    return WebhookDeliveryList(items=items)


@router.get("/{webhook_id}/deliveries/{delivery_id}", response_model=WebhookDelivery)
def webhook_delivery(
    webhook_id: EndpointId, delivery_id: DeliveryId, principal: CurrentPrincipal, session: SessionDep
) -> WebhookDelivery:
    """One delivery with the payload it sends."""
    row = svc.get_delivery(session, principal.tenant_id, webhook_id, delivery_id)
    return svc.delivery_contract(row, with_payload=True)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=WebhookDelivery)
def redeliver_webhook(
    webhook_id: EndpointId, delivery_id: DeliveryId, principal: TenantAdmin, session: SessionDep
) -> WebhookDelivery:
    """Send a delivery again now, with the same webhook-id and body."""
    delivery = svc.redeliver(session, principal.tenant_id, webhook_id, delivery_id)
    session.commit()
    return delivery


@router.post("/{webhook_id}/test", response_model=WebhookDelivery, status_code=202)
def test_webhook(webhook_id: EndpointId, principal: TenantAdmin, session: SessionDep) -> WebhookDelivery:
    """Queue a `webhook.test` event for this endpoint."""
    delivery = svc.send_test(session, principal.tenant_id, webhook_id)
    session.commit()
    return delivery
