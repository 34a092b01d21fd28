"""The widgets' read models: an integration's status, its recent activity, a preview of its records.

Seed: the integration API implementation ("Widget Data Endpoints"). Nothing here is a new log:
activity and the last sync are read from the tenant event log (`events`), the data preview from
the records store (`records`). Who sees what follows `records.reader_owner_keys`: a tenant admin
sees the tenant's connection and every user's records; a user only their own connection of a
user-scoped integration.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import connections, integrations, providers, records
from persistence.errors import InvalidInput
from persistence.models import Connection, Event, Integration, Record, utcnow
from persistence.webhooks import timestamp

TIME_RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
# Event type -> (activity type, status). `connection.tested` is a success unless it left an error.
ACTIVITY_TYPES: dict[str, tuple[str, str]] = {
    "sync.started": ("sync", "running"),
    "sync.succeeded": ("sync", "success"),
    "sync.failed": ("sync", "failed"),
    "connection.connected": ("connect", "success"),
    "connection.failed": ("connect", "failed"),
    "connection.expired": ("connect", "failed"),
    "connection.tested": ("test", "success"),
    "connection.disconnected": ("disconnect", "success"),
}
SYNC_TYPES = ("sync.started", "sync.succeeded", "sync.failed")
# A widget reads at most this many events of one range: a dashboard's bounded cost, whatever the history.
SCAN_LIMIT = 5000


@dataclass(frozen=True)
class Viewer:
    """Whose view a widget shows: `user_id` None for a tenant admin (the tenant's connection)."""

    tenant_id: uuid.UUID
    role: str
    user_id: uuid.UUID


@dataclass(frozen=True)
class Status:
    """The status widget's facts (contract: `WidgetStatus`)."""

    integration: Integration
    connection: Connection | None
    last_sync_at: str | None
    error: str | None


def integration_for(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, viewer: Viewer,
                    requested_user_id: uuid.UUID | None = None) -> tuple[Integration, list[str] | None]:
    """The integration and whose records the viewer reads (`records.reader_owner_keys`).

    Raises NotFound for another tenant's or an unknown id, and for a user asking about a
    tenant-level integration; PermissionDenied for a user naming another user.
    """
    integration = integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    owners = records.reader_owner_keys(integration, role=viewer.role, user_id=viewer.user_id,
                                       requested_user_id=requested_user_id)
    return integration, owners


def status(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, viewer: Viewer) -> Status:
    """The integration's status as the viewer sees it: their connection, the last successful sync, the error."""
    integration, _ = integration_for(session, tenant_id=tenant_id, integration_id=integration_id, viewer=viewer)
    own_user = _own_user(viewer)
    connection = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=own_user)
    sync_events = _events(session, tenant_id=tenant_id, integration_id=integration_id, types=SYNC_TYPES[1:],
                          since=None, user_filter=_sync_user_filter(viewer), connection_ids=None, limit=50)
    last_success = next((event for event in sync_events if event.type == "sync.succeeded"), None)
    last_failure = sync_events[0] if sync_events and sync_events[0].type == "sync.failed" else None
    error = (connection.validation_error if connection is not None else None) or integration.last_error
    if error is None and last_failure is not None:
        error = ((last_failure.data.get("error") or {}).get("message") or "The last sync run failed")[:500]
    return Status(integration=integration, connection=connection, error=error,
                  last_sync_at=last_success.data.get("finishedAt") if last_success is not None else None)


def activity(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, viewer: Viewer, time_range: str,
             limit: int, now: datetime | None = None) -> tuple[list[dict[str, Any]], int]:
    """The integration's activity within `time_range` (1h | 24h | 7d | 30d), newest first: `(items[:limit], total)`.

    One item per sync run (its newest state), connection test, connect (or failed
    authorization, or expiry) and disconnect; a user sees only their own connection's. Each item
    is the contract's `WidgetActivityItem`.
    """
    integration_for(session, tenant_id=tenant_id, integration_id=integration_id, viewer=viewer)
    since = (now or utcnow()) - TIME_RANGES[time_range]
    connection_ids = None
    if viewer.role != "tenant_admin":
        own = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=viewer.user_id)
        connection_ids = [str(own.id)] if own is not None else []
    rows = _events(session, tenant_id=tenant_id, integration_id=integration_id, types=tuple(ACTIVITY_TYPES),
                   since=since, user_filter=_sync_user_filter(viewer), connection_ids=connection_ids,
                   limit=SCAN_LIMIT)
    items: list[dict[str, Any]] = []
    seen_runs: set[str] = set()
    for event in rows:  # newest first: the first event of a run is its current state
        if event.type in SYNC_TYPES:
            run_id = str(event.data.get("id"))
            if run_id in seen_runs:
                continue
            seen_runs.add(run_id)
        items.append(_activity_item(event))
    return items[:limit], len(items)


def data_preview(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, viewer: Viewer, entity: str,
                 filters: Mapping[str, Any] | None, limit: int,
                 requested_user_id: uuid.UUID | None = None) -> tuple[list[Record], int]:
    """The most recently changed live records of `entity` the viewer may read, and how many match.

    `filters` is field equality on the record's data (`records.data_filter_clauses`). Raises
    InvalidInput (field `entity`) for an entity the provider does not declare, (field
    `filters`) for malformed filters; NotFound / PermissionDenied as `integration_for`.
    """
    integration, owners = integration_for(session, tenant_id=tenant_id, integration_id=integration_id,
                                          viewer=viewer, requested_user_id=requested_user_id)
    provider = providers.get(session, provider_id=integration.provider_id)
    declared = [item.get("name") for item in provider.available_entities or []]
    if entity not in declared:
        raise InvalidInput(f"entity: {entity!r} is not an entity of this provider (one of: {', '.join(declared)})",
                           details={"field": "entity", "entities": declared})
    clauses = records.data_filter_clauses(filters or {})
    stmt = select(Record).where(Record.tenant_id == tenant_id, Record.integration_id == integration_id,
                                Record.entity == entity, Record.deleted_at.is_(None), *clauses)
    if owners is not None:
        stmt = stmt.where(Record.owner_key.in_(owners))
    rows = list(session.exec(stmt.order_by(Record.seq.desc()).limit(limit)).all())
    total = session.exec(select(sa.func.count()).select_from(stmt.order_by(None).subquery())).one()
    return rows, total


def _own_user(viewer: Viewer) -> uuid.UUID | None:
    return None if viewer.role == "tenant_admin" else viewer.user_id


def _sync_user_filter(viewer: Viewer) -> str | None:
    # A user's sync runs are those of their own connection (`SyncRun.userId`); an admin sees all.
    return None if viewer.role == "tenant_admin" else str(viewer.user_id)


def _events(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, types: Sequence[str],
            since: datetime | None, user_filter: str | None, connection_ids: Sequence[str] | None,
            limit: int) -> list[Event]:
    stmt = select(Event).where(Event.tenant_id == tenant_id, Event.type.in_(list(types)),
                               Event.data["integrationId"].as_string() == str(integration_id))
    if since is not None:
        stmt = stmt.where(Event.occurred_at >= since)
    if user_filter is not None:
        sync_mine = sa.and_(Event.type.in_(SYNC_TYPES), Event.data["userId"].as_string() == user_filter)
        connection_mine = sa.and_(Event.type.notin_(SYNC_TYPES),
                                  Event.data["connectionId"].as_string().in_(list(connection_ids or [""])))
        stmt = stmt.where(sa.or_(sync_mine, connection_mine))
    return list(session.exec(stmt.order_by(Event.seq.desc()).limit(limit)).all())


def _activity_item(event: Event) -> dict[str, Any]:
    kind, state = ACTIVITY_TYPES[event.type]
    data = event.data or {}
    if kind == "sync":
        error = data.get("error")
        details = {"runId": data.get("id"), "entity": data.get("entity"), "kind": data.get("kind"),
                   "trigger": data.get("trigger"), "added": data.get("added"), "updated": data.get("updated"),
                   "deleted": data.get("deleted"), "error": error}
    elif kind == "test":
        details = {"error": data.get("validationError")}
        state = "failed" if data.get("validationError") else "success"
    elif kind == "connect":
        details = {} if state == "success" else {"reason": "expired" if event.type == "connection.expired" else "failed",
                                                 "error": data.get("validationError")}
    else:
        details = {}
    return {"id": event.id, "type": kind, "status": state, "timestamp": timestamp(event.occurred_at),
            "details": details}
