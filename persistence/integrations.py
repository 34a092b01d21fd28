"""Tenant-scoped queries for integration instances. Seed: integration API implementation,
"Tenant Integration Endpoints". No HTTP; never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import search_index
from persistence.errors import Conflict, NotFound, PermissionDenied
from persistence.models import Connection, Integration, OAuthState, Provider, SyncRun, SyncSettings, SyncState, Tenant, utcnow
from persistence.pages import Page, contains, ordering, paginate

PLANS = ("free", "starter", "professional", "enterprise")
SORTABLE = {"name": Integration.name, "createdAt": Integration.created_at, "updatedAt": Integration.updated_at}


@dataclass(frozen=True)
class IntegrationRow:
    """An integration with what its document shows of its provider and tenant connection."""

    integration: Integration
    provider_key: str
    provider_category: str
    connection_status: str | None


def ensure_plan_allows(tenant: Tenant, provider: Provider) -> None:
    """Raise PermissionDenied naming the plan when a premium provider needs a higher plan."""
    if not provider.is_premium:
        return
    required = provider.required_plan or "starter"
    if PLANS.index(tenant.plan) < PLANS.index(required):
        raise PermissionDenied(
            f"{provider.display_name} requires the {required} plan (the tenant is on {tenant.plan})",
            details={"requiredPlan": required, "currentPlan": tenant.plan},
        )


def create(session: Session, *, tenant: Tenant, provider: Provider, fields: dict[str, Any],
           enabled_by: uuid.UUID) -> IntegrationRow:
    """Enable `provider` for the tenant; Conflict on a name the tenant already uses.

    The caller must have checked the provider is in the tenant catalog; the plan is checked here.
    """
    ensure_plan_allows(tenant, provider)
    _ensure_name_free(session, tenant_id=tenant.id, name=fields["name"])
    now = utcnow()
    row = Integration(tenant_id=tenant.id, provider_id=provider.id, enabled_at=now, enabled_by=enabled_by,
                      status="pending", **fields)
    session.add(row)
    session.flush()
    return IntegrationRow(row, provider.provider, provider.category, None)


def get(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> Integration:
    """Return the tenant's integration; NotFound(INTEGRATION_NOT_FOUND), also for another tenant's."""
    row = session.exec(
        select(Integration).where(Integration.tenant_id == tenant_id, Integration.id == integration_id)
    ).first()
    if row is None:
        raise NotFound("integration", integration_id, code="INTEGRATION_NOT_FOUND")
    return row


def get_row(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> IntegrationRow:
    """Return the tenant's integration with its provider key/category and connection status."""
    row = session.exec(_documents(tenant_id).where(Integration.id == integration_id)).first()
    if row is None:
        raise NotFound("integration", integration_id, code="INTEGRATION_NOT_FOUND")
    return IntegrationRow(*row)


def list_page(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    limit: int,
    offset: int,
    status: str | None = None,
    provider_name: str | None = None,
    search: str | None = None,
    sort_by: str = "createdAt",
    sort_order: str = "asc",
) -> Page[IntegrationRow]:
    """Return one page of the tenant's integrations, filtered by status, provider key and a search."""
    stmt = _documents(tenant_id)
    if status:
        stmt = stmt.where(Integration.status == status)
    if provider_name:
        stmt = stmt.where(Provider.provider == provider_name)
    if search:
        stmt = stmt.where(sa.or_(contains(Integration.name, search), contains(Integration.description, search)))
    order = ordering(SORTABLE[sort_by], sort_order)
    page = paginate(session, stmt, limit=limit, offset=offset, order_by=(order, Integration.id))
    return Page([IntegrationRow(*row) for row in page.items], page.total, page.limit, page.offset)


def update(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, fields: dict[str, Any]) -> Integration:
    """Apply column-named `fields`; Conflict on a name the tenant already uses."""
    row = get(session, tenant_id=tenant_id, integration_id=integration_id)
    if "name" in fields and fields["name"] != row.name:
        _ensure_name_free(session, tenant_id=tenant_id, name=fields["name"])
    search_before = (row.search_enabled, list(row.searchable_entities or ()))
    for key, value in fields.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    if (row.search_enabled, list(row.searchable_entities or ())) != search_before:
        search_index.reindex(session, tenant_id=tenant_id, integration_id=integration_id)
    return row


def delete(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> Integration:
    """Delete the integration with its connections (their sealed secrets), pending OAuth states and sync rows."""
    row = get(session, tenant_id=tenant_id, integration_id=integration_id)
    session.exec(sa.delete(OAuthState).where(OAuthState.integration_id == row.id))
    session.exec(sa.delete(Connection).where(Connection.integration_id == row.id, Connection.tenant_id == tenant_id))
    for table in (SyncRun, SyncState, SyncSettings):  # its sync runs, per-entity state and settings
        session.exec(sa.delete(table).where(table.integration_id == row.id, table.tenant_id == tenant_id))
    search_index.drop(session, tenant_id=tenant_id, integration_id=row.id)
    session.delete(row)
    session.flush()
    return row


def activate(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, by: uuid.UUID) -> Integration:
    """Re-enable: `connected` when the tenant connection is active, else `pending`."""
    row = get(session, tenant_id=tenant_id, integration_id=integration_id)
    active = session.exec(
        select(Connection.id).where(Connection.integration_id == row.id, Connection.owner_key == "tenant",
                                    Connection.status == "active")
    ).first()
    return set_status(session, row, "connected" if active else "pending", enabled_by=by)


def deactivate(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> Integration:
    """Disable the integration, keeping its configuration and connection."""
    return set_status(session, get(session, tenant_id=tenant_id, integration_id=integration_id), "disabled")


def set_status(session: Session, row: Integration, status: str, *, error: str | None = None,
               enabled_by: uuid.UUID | None = None) -> Integration:
    """Set the integration's status (and its lastError / enabledAt / lastConnectedAt as they follow)."""
    now = utcnow()
    row.status = status
    row.last_error = error if status == "error" else None
    if enabled_by is not None:
        row.enabled_at, row.enabled_by = now, enabled_by
    if status == "connected":
        row.last_connected_at = now
    row.updated_at = now
    session.add(row)
    session.flush()
    return row


def _documents(tenant_id: uuid.UUID):
    tenant_connection = sa.and_(Connection.integration_id == Integration.id, Connection.owner_key == "tenant")
    return (
        select(Integration, Provider.provider, Provider.category, Connection.status)
        .join(Provider, Provider.id == Integration.provider_id)
        .outerjoin(Connection, tenant_connection)
        .where(Integration.tenant_id == tenant_id)
    )


def _ensure_name_free(session: Session, *, tenant_id: uuid.UUID, name: str) -> None:
    taken = session.exec(select(Integration.id).where(Integration.tenant_id == tenant_id, Integration.name == name)).first()
    if taken is not None:
        raise Conflict(f"The tenant already has an integration named '{name}'", details={"field": "name"})
