"""Response shapes: explicit allow-lists from rows to the spec's schemas (never a row as is)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from persistence import providers
from persistence.models import Provider, Tenant, User, as_utc
from persistence.pages import Page


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
