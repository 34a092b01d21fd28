"""The tenant event log: every change that matters to a tenant, written with its audit entry.

Seeds: the integrations document ("Outgoing Webhooks"), the PrintShop guide ("Webhook Setup").
`record_change` is the one call a mutation makes: it writes the audit entry and the event in the
caller's transaction (never commits), so a change cannot be audited without being emitted or
emitted without being audited, and both commit or roll back with the change itself. The outbox
rows of the event (webhook deliveries) are written by the same call.

Ordering: `audit.record` locks the tenant's audit chain head before the event row is inserted,
so one tenant's events get their `seq` in commit order; `after(...)` readers walking `seq`
upwards never miss an event that commits late nor see one twice.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, select
from ulid import ULID

from persistence import audit, webhooks
from persistence.audit import Actor
from persistence.errors import NotFound
from persistence.models import Event, utcnow

EVENT_ID_PREFIX = "evt_"


def new_event_id() -> str:
    """Return a fresh public event id: `evt_` + a ULID (26 characters, sortable by time)."""
    return EVENT_ID_PREFIX + str(ULID())


def actor_view(actor: Actor) -> dict[str, Any]:
    """The event's `actor`: `{"type": "user"|"system", "id": <uuid or None>, "role": ...}`."""
    if actor.user_id is None:
        return {"type": "system", "id": None, "role": None}
    return {"type": "user", "id": str(actor.user_id), "role": actor.role}


def record_change(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: object | None,
    event_type: str,
    data: dict[str, Any],
    changes: dict[str, Any] | None = None,
) -> Event:
    """Write the audit entry and the event of one change (and the event's outbox rows); return the event.

    `action` is the audit action (`integration.create`), `event_type` the event type declared in
    the contract (`integration.created`), `data` the resource's API view as the API returns it
    (it must hold no secret: it goes to webhooks and browsers as is). Never commits.
    """
    audit.record(session, tenant_id=tenant_id, actor=actor, action=action, resource_type=resource_type,
                 resource_id=resource_id, changes=changes)
    event = Event(id=new_event_id(), tenant_id=tenant_id, type=event_type, occurred_at=utcnow(), data=data,
                  request_id=actor.request_id, actor=actor_view(actor))
    session.add(event)
    session.flush()  # takes `seq` now, under the chain lock audit.record holds
    webhooks.enqueue_deliveries(session, event=event)
    return event


def get(session: Session, *, tenant_id: uuid.UUID, event_id: str) -> Event:
    """Return one event of the tenant, or raise NotFound (also for another tenant's event id)."""
    row = session.exec(select(Event).where(Event.tenant_id == tenant_id, Event.id == event_id)).first()
    if row is None:
        raise NotFound("event", event_id)
    return row
