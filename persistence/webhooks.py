"""Outgoing webhook endpoints and their delivery outbox (the events-and-webhooks issue).

`enqueue_deliveries` is called by `persistence.events.record_change` for every event, in the
event's transaction, and writes one pending delivery row per enabled endpoint of the tenant
subscribed to the event's type.
"""

from __future__ import annotations

from sqlmodel import Session

from persistence.models import Event


def enqueue_deliveries(session: Session, *, event: Event) -> int:
    """Write the pending deliveries of `event` (one per subscribed, enabled endpoint); return how many."""
    return 0
