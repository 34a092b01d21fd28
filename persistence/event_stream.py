"""Reading the tenant event log forward, for realtime delivery (WebSocket `/ws`, SSE stream).

Readers keep one cursor PER TENANT: a tenant's events take their `seq` in commit order (see
`persistence.events`), but tenants' commits interleave, so a cursor over all tenants could skip
an event of one tenant committed after a later `seq` of another. No HTTP; never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence.events import NOTIFY_CHANNEL
from persistence.models import Event

# Tenants per query of `after_many` (one OR branch each, each served by ix_events_tenant_seq).
_TENANTS_PER_QUERY = 100


def head(session: Session, *, tenant_id: uuid.UUID) -> int:
    """Return the `seq` of the tenant's newest committed event, or 0 when it has none."""
    return session.exec(select(sa.func.max(Event.seq)).where(Event.tenant_id == tenant_id)).one() or 0


def position(session: Session, *, tenant_id: uuid.UUID, event_id: str) -> int | None:
    """Return the `seq` of the tenant's event `event_id`, or None (unknown, pruned, or another tenant's)."""
    return session.exec(select(Event.seq).where(Event.tenant_id == tenant_id, Event.id == event_id)).first()


def after(session: Session, *, tenant_id: uuid.UUID, seq: int, limit: int = 500) -> list[Event]:
    """Return up to `limit` of the tenant's events with `seq` above `seq`, oldest first."""
    stmt = (select(Event).where(Event.tenant_id == tenant_id, Event.seq > seq)
            .order_by(Event.seq).limit(limit))
    return list(session.exec(stmt).all())


def after_many(session: Session, *, cursors: Mapping[uuid.UUID, int], limit: int = 1000) -> list[Event]:
    """Return the events after each tenant's cursor (`{tenant_id: seq}`), oldest first per tenant.

    At most `limit` events per batch of tenants; a reader that gets a full batch for a tenant
    reads again from its new cursor.
    """
    tenants = list(cursors.items())
    found: list[Event] = []
    for start in range(0, len(tenants), _TENANTS_PER_QUERY):
        batch = tenants[start:start + _TENANTS_PER_QUERY]
        condition = sa.or_(*(sa.and_(Event.tenant_id == tenant, Event.seq > seq) for tenant, seq in batch))
        found += session.exec(select(Event).where(condition).order_by(Event.seq).limit(limit)).all()
    return found


async def notifications(database_url: str, *, on_listening: Callable[[], None] | None = None) -> AsyncIterator[uuid.UUID]:
    """Yield the tenant id of each `NOTIFY hub_events` (PostgreSQL only) as it arrives.

    Opens its own autocommit connection (LISTEN needs one outside any transaction); returns
    when the connection is lost (psycopg.OperationalError), so the caller reconnects; calls
    `on_listening()` once LISTEN is in effect. A
    payload that is not a UUID is ignored. A notification is a wake-up only: the log is read
    after it, and one that was lost costs latency, never an event.
    """
    import psycopg  # PostgreSQL deployments only

    url = sa.engine.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        if on_listening is not None:
            on_listening()
        async for note in conn.notifies():
            try:
                yield uuid.UUID(note.payload)
            except ValueError:
                continue
