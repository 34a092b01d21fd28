"""Operations of tag `audit-logs` (openapi/paths/audit-logs.yaml). Read-only: entries are append-only."""

from __future__ import annotations

from uuid import UUID

from handlers import keyset_cursor, views
from persistence import audit
from persistence.db import transaction
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
        since=keyset_cursor.instant(params.get("from"), "from"),
        until=keyset_cursor.instant(params.get("to"), "to"),
    )


def _page(filters: audit.AuditFilter, limit: int, cursor: str | None) -> dict:
    with transaction() as session:
        rows = audit.list_entries(session, filters=filters, limit=limit, after=keyset_cursor.decode(cursor) if cursor else None)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [views.audit_entry(row) for row in rows], "limit": limit, "hasMore": more,
            "nextCursor": keyset_cursor.encode(rows[-1].created_at, rows[-1].id) if more else None}
