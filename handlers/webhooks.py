"""Operations of tag `webhooks` (openapi/paths/webhooks.yaml). Tenant admin.

Outgoing webhooks per the Standard Webhooks spec, Svix-style: endpoints, secrets shown once,
the attempts log, resend, recover and the test send. Seeds: integrations document ("Outgoing
Webhooks"), PrintShop guide ("Webhook Setup").
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from connectors import webhook_sender
from connectors.outbound import OutboundRefused
from handlers import keyset_cursor, views
from persistence import audit, deliveries, events, webhooks
from persistence.db import transaction
from persistence.models import utcnow
from persistence.pages import After
from server import runtime
from server.errors import ApiError
from server.security import Caller

BASE = "/api/v1/webhooks/endpoints"
FIELDS = {"url": "url", "description": "description", "eventTypes": "event_types", "enabled": "enabled"}


def list_webhook_endpoints(token_info: dict, limit: int = 50, offset: int = 0) -> dict:
    """Return one page of the tenant's endpoints, oldest first (never their secrets)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        result = webhooks.list_endpoints(session, tenant_id=caller.tenant_id, limit=limit, offset=offset)
        return views.page("endpoints", result, webhooks.endpoint_view)


def create_webhook_endpoint(body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Add an endpoint; its signing secret is in this answer only."""
    caller = Caller.from_token(token_info)
    _screen(body["url"])
    with transaction() as session:
        row, secret = webhooks.create_endpoint(session, tenant_id=caller.tenant_id, url=body["url"],
                                               description=body.get("description", ""),
                                               event_types=body.get("eventTypes", []), enabled=body.get("enabled", True))
        view = webhooks.endpoint_view(row)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="webhook_endpoint.create",
                             resource_type="webhook_endpoint", resource_id=row.id, changes=body,
                             event_type="webhook_endpoint.created", data=view)
    return {**view, "secret": secret}, 201, {"Location": f"{BASE}/{row.id}"}


def get_webhook_endpoint(endpointId: str, token_info: dict) -> dict:
    """Return one endpoint of the caller's tenant."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        return webhooks.endpoint_view(webhooks.get_endpoint(session, tenant_id=caller.tenant_id,
                                                            endpoint_id=UUID(endpointId)))


def update_webhook_endpoint(endpointId: str, body: dict, token_info: dict) -> dict:
    """Change an endpoint; `enabled: true` re-enables a disabled one."""
    caller = Caller.from_token(token_info)
    if "url" in body:
        _screen(body["url"])
    with transaction() as session:
        row = webhooks.update_endpoint(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId),
                                       fields={FIELDS[key]: value for key, value in body.items()})
        view = webhooks.endpoint_view(row)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="webhook_endpoint.update",
                             resource_type="webhook_endpoint", resource_id=row.id, changes=body,
                             event_type="webhook_endpoint.updated", data=view)
        return view


def delete_webhook_endpoint(endpointId: str, token_info: dict) -> tuple[None, int]:
    """Delete an endpoint and cancel its pending deliveries."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = webhooks.delete_endpoint(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId))
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="webhook_endpoint.delete",
                             resource_type="webhook_endpoint", resource_id=row.id,
                             event_type="webhook_endpoint.deleted", data=webhooks.endpoint_view(row))
    return None, 204


def rotate_webhook_secret(endpointId: str, token_info: dict, body: dict | None = None) -> dict:
    """Give the endpoint a new secret; the old one keeps signing beside it for the grace period."""
    caller = Caller.from_token(token_info)
    settings = runtime.get().settings
    grace = timedelta(seconds=(body or {}).get("gracePeriodSeconds", settings.webhook_secret_grace_seconds))
    with transaction() as session:
        secret, expires = webhooks.rotate_secret(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId),
                                                 grace=grace, now=utcnow())
        row = webhooks.get_endpoint(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId))
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor,
                             action="webhook_endpoint.rotate_secret", resource_type="webhook_endpoint",
                             resource_id=row.id, changes={"gracePeriodSeconds": int(grace.total_seconds())},
                             event_type="webhook_endpoint.updated", data=webhooks.endpoint_view(row))
    return {"secret": secret, "previousSecretExpiresAt": webhooks.timestamp(expires)}


def list_webhook_endpoint_attempts(endpointId: str, token_info: dict, limit: int = 50, cursor: str | None = None,
                                   status: str | None = None) -> dict:
    """Return one page of the attempts to an endpoint, newest first."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        page = deliveries.list_attempts(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId),
                                        status=status, limit=limit, after=_after(cursor))
        return _attempt_page(page)


def list_webhook_message_attempts(eventId: str, token_info: dict, limit: int = 50, cursor: str | None = None,
                                  status: str | None = None) -> dict:
    """Return one page of the attempts of an event to every endpoint, newest first."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        page = deliveries.list_attempts(session, tenant_id=caller.tenant_id, event_id=eventId, status=status,
                                        limit=limit, after=_after(cursor))
        return _attempt_page(page)


def resend_webhook_message(endpointId: str, eventId: str, token_info: dict) -> tuple[dict, int]:
    """Queue one event for the endpoint again, due now."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = deliveries.resend(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId), event_id=eventId,
                                now=utcnow())
        audit.record(session, tenant_id=caller.tenant_id, actor=caller.actor, action="webhook_message.resend",
                            resource_type="webhook_endpoint", resource_id=endpointId, changes={"eventId": eventId})
        return deliveries.delivery_view(row), 202


def recover_webhook_messages(endpointId: str, body: dict, token_info: dict) -> tuple[dict, int]:
    """Queue again every failed message of the window (at most 10,000)."""
    caller = Caller.from_token(token_info)
    now = utcnow()
    since, until = keyset_cursor.instant(body["since"], "since"), keyset_cursor.instant(body.get("until"), "until") or now
    with transaction() as session:
        count, truncated = deliveries.recover(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId),
                                              since=since, until=until, now=now)
        audit.record(session, tenant_id=caller.tenant_id, actor=caller.actor, action="webhook_message.recover",
                            resource_type="webhook_endpoint", resource_id=endpointId,
                            changes={**body, "recovered": count})
    return {"recovered": count, "truncated": truncated}, 202


def send_webhook_test(endpointId: str, token_info: dict) -> dict:
    """Send a `webhook.test` event to the endpoint now and answer with the attempt."""
    caller = Caller.from_token(token_info)
    rt = runtime.get()
    claimer, now = f"test:{caller.request_id}", utcnow()
    with transaction() as session:
        endpoint = deliveries.enabled_endpoint(session, tenant_id=caller.tenant_id, endpoint_id=UUID(endpointId))
        event = events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor,
                                     action="webhook_endpoint.test", resource_type="webhook_endpoint",
                                     resource_id=endpoint.id, event_type="webhook.test",
                                     data=webhooks.endpoint_view(endpoint))
        job = deliveries.start_now(session, endpoint=endpoint, event=event, claimer=claimer, now=now,
                                   lease=timedelta(seconds=rt.settings.webhook_lease_seconds), trigger="test")
    result = webhook_sender.send_now(job, rt.outbound, https_only=rt.settings.is_production)
    with transaction() as session:
        attempt, = deliveries.record_results(session, results=[result], worker=claimer, now=utcnow(),
                                             schedule=rt.settings.retry_schedule)
        return deliveries.attempt_view(attempt)


def _screen(url: str) -> None:
    rt = runtime.get()
    try:
        webhook_sender.check_endpoint_url(url, rt.outbound, https_only=rt.settings.is_production)
    except OutboundRefused as exc:
        raise ApiError(400, "VALIDATION_ERROR", f"url may not be called: {exc}", details={"field": "url"}) from None


def _attempt_page(page) -> dict:
    last = page.items[-1] if page.items else None
    return {"items": [deliveries.attempt_view(row) for row in page.items], "limit": page.limit,
            "hasMore": page.has_more, "nextCursor": keyset_cursor.encode(last.attempted_at, last.id) if page.has_more and last else None}


def _after(cursor: str | None) -> After | None:
    if cursor is None:
        return None
    instant, attempt_id = keyset_cursor.decode(cursor)
    return After(value=instant, id=attempt_id)
