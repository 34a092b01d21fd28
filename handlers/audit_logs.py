"""Operations of tag `audit-logs` (openapi/paths/audit-logs.yaml). Read-only: entries are append-only."""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID

from handlers import views
from persistence import audit
from persistence.db import transaction
from persistence.models import as_utc
from server.errors import ApiError
from server.security import Caller


def list_tenant_audit_logs(token_info: dict, limit: int = 50, cursor: str | None = None, **filters) -> dict:
    """Return one page of the caller's tenant's audit log, newest first."""
    caller = Caller.from_token(token_info)
    return _page(_filters(filters, tenant_id=caller.tenant_id), limit, cursor)


def list_audit_logs(token_info: dict, limit: int = 50, cursor: str | None = None, tenantId: str | None = None,
                    **filters) -> dict:
    """Return one page of the audit log of every tenant (or of `tenantId`), newest first."""
    return _page(_filters(filters, tenant_id=UUID(tenantId) if tenantId else None), limit, cursor)


def _filters(params: dict, *, tenant_id: UUID | None) -> audit.AuditFilter:
    # `from` and `to` are Python keywords, hence the keyword-argument dict.
    return audit.AuditFilter(
        tenant_id=tenant_id,
        actor_id=UUID(params["actor"]) if params.get("actor") else None,
        action=params.get("action"),
        resource_type=params.get("resourceType"),
        resource_id=params.get("resourceId"),
        outcome=params.get("outcome"),
        since=_instant(params.get("from"), "from"),
        until=_instant(params.get("to"), "to"),
    )


def _page(filters: audit.AuditFilter, limit: int, cursor: str | None) -> dict:
    with transaction() as session:
        rows = audit.list_entries(session, filters=filters, limit=limit, after=_decode(cursor) if cursor else None)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [views.audit_entry(row) for row in rows], "limit": limit, "hasMore": more,
            "nextCursor": _encode(rows[-1]) if more else None}


def _encode(row) -> str:
    raw = f"{as_utc(row.created_at).isoformat(timespec='microseconds')}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, entry_id = raw.split("|")
        return datetime.fromisoformat(created), UUID(entry_id)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "VALIDATION_ERROR", "cursor is not a cursor this API returned",
                       details={"field": "cursor"}) from None


def _instant(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "VALIDATION_ERROR", f"{field} must be an RFC 3339 date-time", details={"field": field}) from None
    if when.tzinfo is None:
        raise ApiError(400, "VALIDATION_ERROR", f"{field} needs a timezone (Z or an offset)", details={"field": field})
    return as_utc(when)
