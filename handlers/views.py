"""Response shapes: explicit allow-lists from rows to the spec's schemas (never a row as is)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Callable

from connectors.probe import ProbeResult
from persistence import connections, providers, records
from persistence.integrations import IntegrationRow
from persistence.models import ApiToken, AuditEntry, Connection, Event, Provider, Record, Tenant, User, as_utc
from persistence.pages import Page
from persistence.widgets import Status as WidgetStatusFacts
from server import runtime
from server.errors import ApiError


def timestamp(value: datetime | None) -> str | None:
    """Format a datetime as RFC 3339 UTC with `Z` (microseconds kept), or None."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


def page(items_key: str, result: Page, shape: Callable[[Any], dict]) -> dict:
    """Return the list envelope `{<items_key>, total, limit, offset, hasMore, nextOffset}`."""
    return {
        items_key: [shape(item) for item in result.items],
        "total": result.total,
        "limit": result.limit,
        "offset": result.offset,
        "hasMore": result.has_more,
        "nextOffset": result.next_offset,
    }


def auth_user(user: User) -> dict:
    """AuthUser: the user summary carried by token responses."""
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "tenantId": str(user.tenant_id) if user.tenant_id else None,
    }


def tenant_summary(tenant: Tenant) -> dict:
    """TenantSummary."""
    return {"id": str(tenant.id), "name": tenant.name, "plan": tenant.plan, "status": tenant.status}


def tenant(row: Tenant) -> dict:
    """Tenant."""
    return {
        **tenant_summary(row),
        "createdAt": timestamp(row.created_at),
        "updatedAt": timestamp(row.updated_at),
    }


def me(user: User, tenant_row: Tenant | None, scopes: list[str]) -> dict:
    """Me: the caller, its tenant and its permissions."""
    return {
        **auth_user(user),
        "tenant": tenant_summary(tenant_row) if tenant_row else None,
        "permissions": sorted(scopes),
        "createdAt": timestamp(user.created_at),
        "lastLogin": timestamp(user.last_login_at),
    }


def user(row: User) -> dict:
    """User (never the password hash)."""
    return {
        "id": str(row.id),
        "tenantId": str(row.tenant_id),
        "email": row.email,
        "name": row.name,
        "role": row.role,
        "active": row.active,
        "lastLoginAt": timestamp(row.last_login_at),
        "createdAt": timestamp(row.created_at),
        "updatedAt": timestamp(row.updated_at),
    }


def provider(row: Provider) -> dict:
    """IntegrationProvider (IntegrationProviderDocument of the seed)."""
    shaped = {api: getattr(row, column) for api, column in providers.DOCUMENT_FIELDS.items()}
    shaped["id"] = str(row.id)
    shaped["createdAt"] = timestamp(row.created_at)
    shaped["updatedAt"] = timestamp(row.updated_at)
    return shaped


def integration(row: IntegrationRow) -> dict:
    """Integration (IntegrationDocument of the seed)."""
    item = row.integration
    return {
        "id": str(item.id),
        "tenantId": str(item.tenant_id),
        "integrationId": str(item.provider_id),
        "providerName": row.provider_key,
        "providerCategory": row.provider_category,
        "name": item.name,
        "description": item.description,
        "icon": item.icon,
        "settings": item.settings or {},
        "allowedShardTypes": item.allowed_shard_types or [],
        "searchEnabled": item.search_enabled,
        "searchableEntities": item.searchable_entities or [],
        "userScoped": item.user_scoped,
        "status": item.status,
        "connectionStatus": row.connection_status,
        "enabledAt": timestamp(item.enabled_at),
        "enabledBy": str(item.enabled_by) if item.enabled_by else None,
        "lastConnectedAt": timestamp(item.last_connected_at),
        "lastError": item.last_error,
        "incomingWebhookUrl": incoming_webhook_url(item.id),
        "webhookSecretSet": item.webhook_secret is not None,
        "createdAt": timestamp(item.created_at),
        "updatedAt": timestamp(item.updated_at),
    }


def incoming_webhook_url(integration_id: object) -> str:
    """Where a provider POSTs the integration's change notifications (`HUB_PUBLIC_URL` + the incoming path)."""
    try:
        base = runtime.get().settings.hub_public_url
    except RuntimeError:
        base = ""  # no app in this process (scripts/bench_floor.py shapes views without one): a relative URL
    return f"{base}/api/v1/webhooks/incoming/{integration_id}"


def connection(row: Connection) -> dict:
    """Connection: its state and the name of its secret, never the secret (`persistence.connections.view`)."""
    return connections.view(row)


def connected(row: Connection) -> dict:
    """Connected: the answer of the connect operations."""
    return {"connectionId": str(row.id), "status": row.status, "connectedAt": timestamp(row.connected_at)}


def check_result(result: ProbeResult) -> dict:
    """ConnectionTestResult (provider and connection tests): only the fields that have a value."""
    shaped = {"success": result.success, "testedAt": timestamp(result.tested_at), "responseTime": result.response_time_ms}
    shaped.update({k: v for k, v in (("message", result.message), ("error", result.error)) if v})
    return shaped


def api_token(row: ApiToken) -> dict:
    """ApiToken (never its secret or hash)."""
    return {
        "id": str(row.id),
        "name": row.name,
        "prefix": row.prefix,
        "scopes": row.scopes or [],
        "createdBy": str(row.created_by),
        "createdAt": timestamp(row.created_at),
        "expiresAt": timestamp(row.expires_at),
        "lastUsedAt": timestamp(row.last_used_at),
        "revokedAt": timestamp(row.revoked_at),
    }


def audit_entry(row: AuditEntry) -> dict:
    """AuditEntry."""
    return {
        "id": str(row.id),
        "tenantId": str(row.tenant_id) if row.tenant_id else None,
        "actorId": str(row.actor_id) if row.actor_id else None,
        "actorRole": row.actor_role,
        "action": row.action,
        "resourceType": row.resource_type,
        "resourceId": row.resource_id,
        "requestId": row.request_id,
        "ip": row.ip,
        "changes": row.changes,
        "outcome": row.outcome,
        "createdAt": timestamp(row.created_at),
        "seq": row.seq,
        "hash": row.hash,
        "prevHash": row.prev_hash,
    }


def event(row: Event) -> dict:
    """Event: the envelope of one change (its `data` is the resource's view, stored as emitted)."""
    return {
        "id": row.id,
        "type": row.type,
        "occurredAt": timestamp(row.occurred_at),
        "tenantId": str(row.tenant_id),
        "data": row.data,
        "requestId": row.request_id,
        "actor": row.actor,
    }


def integration_health(item, connection: Connection | None, provider_key: str) -> dict:
    """IntegrationHealth: healthy when the connection is active and its last check succeeded."""
    checked = connection is not None and connection.last_validated_at is not None
    healthy = checked and connection.status == "active" and not connection.validation_error
    return {
        "integrationId": str(item.id),
        "tenantId": str(item.tenant_id),
        "name": item.name,
        "provider": provider_key,
        "status": item.status,
        "connectionStatus": connection.status if connection else None,
        "health": "healthy" if healthy else ("unhealthy" if checked or (connection and connection.status != "active")
                                             else "unknown"),
        "responseTime": connection.last_response_time_ms if connection else None,
        "lastCheck": timestamp(connection.last_validated_at) if connection else None,
        "error": (connection.validation_error if connection else None) or item.last_error,
    }


def overall_health(items: list[dict]) -> str:
    """healthy when no checked connection is unhealthy, unhealthy when none is healthy, else degraded."""
    judged = [item["health"] for item in items if item["health"] != "unknown"]
    if not judged or all(h == "healthy" for h in judged):
        return "healthy"
    return "unhealthy" if all(h == "unhealthy" for h in judged) else "degraded"


# -- records (issue 14, section 4) -------------------------------------------------------------
# The records cursor is the last seen record's `seq` (the integration's modification sequence),
# as `r1:<seq>` in unpadded urlsafe base64: opaque to clients, versioned if it ever changes.
_RECORD_CURSOR_PREFIX = "r1:"


def encode_record_cursor(seq: int) -> str:
    """Return the cursor that points after the record change numbered `seq`."""
    return base64.urlsafe_b64encode(f"{_RECORD_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_record_cursor(cursor: str | None) -> int | None:
    """Return the `seq` a records cursor holds (None for None); ApiError 400 (`details.field: cursor`) otherwise."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if raw.startswith(_RECORD_CURSOR_PREFIX) and raw[len(_RECORD_CURSOR_PREFIX):].isdigit():
            return int(raw[len(_RECORD_CURSOR_PREFIX):])
    except (ValueError, UnicodeDecodeError):
        pass
    raise ApiError(400, "VALIDATION_ERROR", "cursor is not a cursor this API returned", details={"field": "cursor"})


def record_page(rows: list, *, has_more: bool, after: int | None) -> dict:
    """Return `{records, nextCursor, hasMore}`; an empty page keeps the cursor it was asked with (poll with it)."""
    last = rows[-1].seq if rows else (after or 0)
    return {"records": [records.record_view(row) for row in rows], "nextCursor": encode_record_cursor(last),
            "hasMore": has_more}


def widget_status(status: WidgetStatusFacts) -> dict:
    """WidgetStatus: the integration, the caller's connection, the last successful sync and the current error."""
    connection = status.connection
    return {
        "integrationId": str(status.integration.id),
        "name": status.integration.name,
        "status": status.integration.status,
        "connectionStatus": connection.status if connection is not None else None,
        "lastConnectedAt": timestamp(connection.connected_at if connection is not None
                                     else status.integration.last_connected_at),
        "lastSyncAt": status.last_sync_at,
        "error": status.error,
    }


def record_data(row: Record, fields: list[str] | None) -> dict:
    """A record's data for the data widget, cut down to the top-level `fields` when given."""
    if not fields:
        return row.data
    return {name: row.data[name] for name in fields if name in row.data}
