"""Operations of tag `events` (openapi/paths/events.yaml): the tenant event log and the declared
event types. Tenant admin. Seeds: the integrations document ("Outgoing Webhooks"), the PrintShop
guide ("Webhook Setup": events)."""

from __future__ import annotations

from handlers import views
from persistence import events
from persistence.db import transaction
from server import runtime
from server.errors import ApiError
from server.security import Caller


def list_events(token_info: dict, after: str | None = None, types: list[str] | None = None, limit: int = 50) -> dict:
    """Return the tenant's events oldest first, strictly after the event `after` (keyset on commit order)."""
    caller = Caller.from_token(token_info)
    wanted = requested_types(types)
    with transaction() as session:
        rows = events.after(session, tenant_id=caller.tenant_id, cursor=after, types=wanted, limit=limit)
    page = rows[:limit]
    return {"events": [views.event(row) for row in page], "limit": limit, "hasMore": len(rows) > limit,
            "nextCursor": page[-1].id if page else after}


def list_event_types(token_info: dict) -> dict:
    """Return the event types the contract declares, each with its schema and an example."""
    return {"eventTypes": runtime.get().event_types}


def requested_types(values: list[str] | None) -> list[str] | None:
    """Return the `types` filter as a list of declared types (repeated and comma-separated forms).

    Raises ApiError 400 naming the unknown ones, so a typo cannot silently filter everything out.
    """
    if not values:
        return None
    wanted = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {declared["name"] for declared in runtime.get().event_types})
    if unknown or not wanted:
        raise ApiError(400, "VALIDATION_ERROR", f"types: unknown event types: {', '.join(unknown) or '(none given)'}",
                       details={"field": "types", "unknown": unknown})
    return wanted
