"""Outgoing webhook endpoints and the outbox rows of new events (the events-and-webhooks issue).

Standard Webhooks (https://www.standardwebhooks.com) secrets and Svix's endpoint model.
`enqueue_deliveries` is called by `persistence.events.record_change` for every event, in the
event's transaction, and writes one pending delivery row per enabled endpoint of the tenant
subscribed to the event's type. Claiming, attempts and replay live in `persistence.deliveries`.
No HTTP; never commits.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import vault
from persistence.errors import NotFound
from persistence.models import Event, WebhookDelivery, WebhookEndpoint, as_utc, utcnow
from persistence.pages import Page, paginate

SECRET_PREFIX = "whsec_"
# Sent to one endpoint on request (the test send), never fanned out to the subscribers.
TARGETED_TYPES = frozenset({"webhook.test"})
ENDPOINT_NOT_FOUND = "WEBHOOK_ENDPOINT_NOT_FOUND"


def new_secret() -> str:
    """Return a fresh signing secret: `whsec_` + base64 of 32 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode()


def _binding(tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> str:
    return f"webhook_endpoint:{tenant_id}:{endpoint_id}"


def timestamp(value: datetime | None) -> str | None:
    """Format a datetime as the API does: RFC 3339 UTC with `Z`, microseconds kept."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


def endpoint_view(row: WebhookEndpoint) -> dict[str, Any]:
    """The endpoint as the API shows it (and as `webhook_endpoint.*` events carry it): never a secret.

    Here rather than in handlers/views.py because the worker, which disables endpoints, emits
    this view too and may not import handlers.
    """
    return {"id": str(row.id), "url": row.url, "description": row.description, "eventTypes": list(row.event_types),
            "enabled": row.enabled, "disabledReason": row.disabled_reason,
            "failingSince": timestamp(row.failing_since), "createdAt": timestamp(row.created_at),
            "updatedAt": timestamp(row.updated_at)}


def signing_secrets(row: WebhookEndpoint, *, now: datetime) -> list[str]:
    """Return the secrets a delivery is signed with now: the current one, and the previous during its grace."""
    found = [vault.open_sealed(row.secret, binding=_binding(row.tenant_id, row.id))]
    expires = as_utc(row.previous_secret_expires_at)
    if row.previous_secret and expires is not None and expires > now:
        found.append(vault.open_sealed(row.previous_secret, binding=_binding(row.tenant_id, row.id)))
    return found


def create_endpoint(session: Session, *, tenant_id: uuid.UUID, url: str, description: str,
                    event_types: list[str], enabled: bool) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint with a fresh, vault-sealed secret; return (row, the secret in clear, to show once)."""
    row = WebhookEndpoint(tenant_id=tenant_id, url=url, description=description, event_types=list(event_types),
                          enabled=enabled, secret="")
    secret = new_secret()
    row.secret = vault.seal(secret, binding=_binding(tenant_id, row.id))
    session.add(row)
    session.flush()
    return row, secret


def get_endpoint(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID,
                 for_update: bool = False) -> WebhookEndpoint:
    """Return the tenant's endpoint, or raise NotFound (WEBHOOK_ENDPOINT_NOT_FOUND), also for another tenant's."""
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = session.exec(stmt).one_or_none()
    if row is None:
        raise NotFound("webhook endpoint", endpoint_id, code=ENDPOINT_NOT_FOUND)
    return row


def list_endpoints(session: Session, *, tenant_id: uuid.UUID, limit: int, offset: int) -> Page[WebhookEndpoint]:
    """Return one page of the tenant's endpoints, oldest first."""
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    return paginate(session, stmt, limit=limit, offset=offset,
                    order_by=(WebhookEndpoint.created_at, WebhookEndpoint.id))


def update_endpoint(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID,
                    fields: dict[str, Any]) -> WebhookEndpoint:
    """Apply `fields` (url, description, event_types, enabled) and return the row.

    Enabling clears the disable reason and the failure history (a re-enabled endpoint gets
    five fresh days); disabling by hand fails its pending deliveries like the hub's own
    disabling does, so `recover` can bring them back.
    """
    row = get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id, for_update=True)
    for name, value in fields.items():
        setattr(row, name, list(value) if name == "event_types" else value)
    if fields.get("enabled") is True:
        row.disabled_reason, row.failing_since = None, None
    elif fields.get("enabled") is False:
        row.disabled_reason = row.disabled_reason or "disabled by an administrator"
        settle_pending(session, endpoint_id=row.id, status="failed")
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def disable_endpoint(session: Session, *, endpoint: WebhookEndpoint, reason: str, now: datetime) -> None:
    """Disable `endpoint` (410 Gone, 5 days of failures) and fail its pending deliveries."""
    endpoint.enabled, endpoint.disabled_reason, endpoint.updated_at = False, reason[:200], now
    session.add(endpoint)
    settle_pending(session, endpoint_id=endpoint.id, status="failed")
    session.flush()


def delete_endpoint(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """Delete the endpoint and cancel its pending deliveries (the attempts log stays); return the row."""
    row = get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id, for_update=True)
    settle_pending(session, endpoint_id=row.id, status="cancelled")
    session.delete(row)
    session.flush()
    return row


def settle_pending(session: Session, *, endpoint_id: uuid.UUID, status: str) -> int:
    """Move every pending delivery of the endpoint to `status` (failed, cancelled); return how many."""
    result = session.execute(
        sa.update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .values(status=status, next_attempt_at=None, claimed_until=None, claimed_by=None, updated_at=utcnow()))
    return result.rowcount or 0


def rotate_secret(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, grace: timedelta,
                  now: datetime) -> tuple[str, datetime | None]:
    """Give the endpoint a new secret; the current one keeps signing beside it for `grace`.

    Returns (the new secret in clear, when the old one stops signing or None without grace).
    A secret still in its grace from an earlier rotation is dropped: at most two sign.
    """
    row = get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id, for_update=True)
    secret = new_secret()
    expires = now + grace if grace > timedelta(0) else None
    row.previous_secret = row.secret if expires else None
    row.previous_secret_expires_at = expires
    row.secret = vault.seal(secret, binding=_binding(tenant_id, row.id))
    row.updated_at = now
    session.add(row)
    session.flush()
    return secret, expires


def subscribed(row: WebhookEndpoint, event_type: str) -> bool:
    """True when the endpoint takes events of `event_type` (an empty `event_types` takes all)."""
    return not row.event_types or event_type in row.event_types


def enqueue_deliveries(session: Session, *, event: Event) -> int:
    """Write the pending deliveries of `event` (one per subscribed, enabled endpoint); return how many.

    Due at once (the schedule's first try is immediate); the worker claims them.
    """
    if event.type in TARGETED_TYPES:
        return 0
    endpoints = session.exec(select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
        WebhookEndpoint.tenant_id == event.tenant_id, WebhookEndpoint.enabled == sa.true())).all()
    now = utcnow()
    # A Core INSERT of plain rows: building a WebhookDelivery entity and flushing it through the
    # unit of work was a quarter of what emitting an event costs a mutation.
    rows = [{"id": uuid.uuid4(), "tenant_id": event.tenant_id, "endpoint_id": endpoint_id, "event_id": event.id,
             "status": "pending", "trigger": "scheduled", "step": 0, "attempt_count": 0, "next_attempt_at": now,
             "claimed_until": None, "claimed_by": None, "created_at": now, "updated_at": now}
            for endpoint_id, types in endpoints if not types or event.type in types]
    if rows:
        session.execute(sa.insert(WebhookDelivery.__table__), rows)
    return len(rows)
