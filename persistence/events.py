"""The tenant event log: every change that matters to a tenant, written with its audit entry.

Seeds: the integrations document ("Outgoing Webhooks"), the PrintShop guide ("Webhook Setup").
`record_change` is the one call a mutation makes: it writes the audit entry and the event in the
caller's transaction (never commits), so a change cannot be audited without being emitted or
emitted without being audited, and both commit or roll back with the change itself. The outbox
rows of the event (webhook deliveries) are written by the same call.

Ordering: `audit.record` locks the tenant's audit chain head before the event row is inserted,
so one tenant's events get their `seq` in commit order; `after(...)` readers walking `seq`
upwards never miss an event that commits late nor see one twice.

Retention: `prune` deletes events older than a cut-off in bounded batches (the worker calls
it periodically; `integration-hub events prune` runs it by hand).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlmodel import Session, select
from ulid import ULID

from persistence import audit, webhooks
from persistence.audit import Actor
from persistence.errors import InvalidInput, NotFound
from persistence.models import Event, utcnow

EVENT_ID_PREFIX = "evt_"
# PostgreSQL NOTIFY channel woken with a tenant id when a transaction holding its events commits.
NOTIFY_CHANNEL = "hub_events"
_PENDING_KEY = "hub_event_tenants"  # Session.info key: tenants whose events this transaction wrote
_commit_listeners: list[Callable[[set[uuid.UUID]], None]] = []


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
    outcome: str = "success",
) -> Event:
    """Write the audit entry and the event of one change (and the event's outbox rows); return the event.

    `action` is the audit action (`integration.create`), `event_type` the event type declared in
    the contract (`integration.created`), `data` the resource's API view as the API returns it
    (it must hold no secret: it goes to webhooks and browsers as is); `outcome` the audit
    entry's (a refused authorization is still a change: the connection failed). Never commits.
    """
    audit.record(session, tenant_id=tenant_id, actor=actor, action=action, resource_type=resource_type,
                 resource_id=resource_id, changes=changes, outcome=outcome)
    event = Event(id=new_event_id(), tenant_id=tenant_id, type=event_type, occurred_at=utcnow(), data=data,
                  request_id=actor.request_id, actor=actor_view(actor))
    session.add(event)
    session.flush()  # takes `seq` now, under the chain lock audit.record holds
    webhooks.enqueue_deliveries(session, event=event)
    _note_for_commit(session, tenant_id)
    return event


def add_commit_listener(listener: Callable[[set[uuid.UUID]], None]) -> None:
    """Call `listener(tenant_ids)` after each commit that wrote events (in the committing thread).

    Realtime delivery installs its wake-up here (server/fanout.py), so persistence needs no
    knowledge of what listens. A listener must be quick and never raise into the committer:
    its exceptions are swallowed. Adding the same listener twice has no effect.
    """
    if listener not in _commit_listeners:
        _commit_listeners.append(listener)


def remove_commit_listener(listener: Callable[[set[uuid.UUID]], None]) -> None:
    """Stop calling `listener` after commits (no error when it was not added)."""
    if listener in _commit_listeners:
        _commit_listeners.remove(listener)


def _note_for_commit(session: Session, tenant_id: uuid.UUID) -> None:
    pending = session.info.setdefault(_PENDING_KEY, set())
    if tenant_id not in pending and session.get_bind().dialect.name == "postgresql":
        # Delivered by PostgreSQL at commit, never for a rolled-back transaction: the LISTENing
        # hub processes wake up exactly when the events become readable.
        session.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, str(tenant_id))))
    pending.add(tenant_id)


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    tenants = session.info.pop(_PENDING_KEY, None)
    if not tenants:
        return
    for listener in list(_commit_listeners):
        try:
            listener(set(tenants))
        except Exception:  # noqa: BLE001 - a listener's fault must not fail a committed request
            pass


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def get(session: Session, *, tenant_id: uuid.UUID, event_id: str) -> Event:
    """Return one event of the tenant, or raise NotFound (also for another tenant's event id)."""
    row = session.exec(select(Event).where(Event.tenant_id == tenant_id, Event.id == event_id)).first()
    if row is None:
        raise NotFound("event", event_id)
    return row


def after(session: Session, *, tenant_id: uuid.UUID, cursor: str | None, types: Sequence[str] | None,
          limit: int) -> list[Event]:
    """Return up to `limit + 1` of the tenant's events oldest first, strictly after the event `cursor`.

    `cursor` is an event id of this tenant (None: from the oldest kept event); `types` keeps only
    those event types (None or empty: all). Keyset on `seq` (commit order per tenant, see the
    module docstring), so a reader walking page after page never misses or repeats an event.
    The extra row tells the caller whether more follow. Raises InvalidInput (field `after`) for
    a cursor that is not an event of this tenant: unknown, another tenant's, or already pruned.
    """
    stmt = select(Event).where(Event.tenant_id == tenant_id)
    if cursor is not None:
        seq = session.exec(select(Event.seq).where(Event.tenant_id == tenant_id, Event.id == cursor)).first()
        if seq is None:
            raise InvalidInput(f"after: {cursor} is not an event of this tenant's log (unknown, or older than the "
                               "retention period); start again without `after`", details={"field": "after"})
        stmt = stmt.where(Event.seq > seq)
    if types:
        stmt = stmt.where(Event.type.in_(sorted(set(types))))
    return list(session.exec(stmt.order_by(Event.seq).limit(limit + 1)).all())


def prune(session: Session, *, older_than: datetime, batch: int = 1000) -> int:
    """Delete up to `batch` events that occurred before `older_than` (oldest first); return how many.

    Bounded so one call holds its locks briefly: call it again while it returns `batch`.
    Never commits.
    """
    doomed = select(Event.seq).where(Event.occurred_at < older_than).order_by(Event.seq).limit(batch)
    seqs = list(session.exec(doomed).all())
    if not seqs:
        return 0
    session.exec(sa.delete(Event).where(Event.seq.in_(seqs)))
    return len(seqs)
