"""Queries over tenants (platform-level rows: only super admins reach them through the API)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, select

from persistence.errors import NotFound
from persistence.models import Tenant, utcnow
from persistence.pages import Page, contains, ordering, paginate

SORTABLE = {"name": Tenant.name, "createdAt": Tenant.created_at}


def create(session: Session, *, name: str, plan: str = "free", status: str = "active") -> Tenant:
    """Add a tenant and return it (flushed, so its id is usable)."""
    tenant = Tenant(name=name, plan=plan, status=status)
    session.add(tenant)
    session.flush()
    return tenant


def get(session: Session, *, tenant_id: uuid.UUID) -> Tenant:
    """Return the tenant, or raise NotFound(TENANT_NOT_FOUND)."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant", tenant_id, code="TENANT_NOT_FOUND")
    return tenant


def list_page(
    session: Session,
    *,
    limit: int,
    offset: int,
    status: str | None = None,
    plan: str | None = None,
    search: str | None = None,
    sort_by: str = "createdAt",
    sort_order: str = "asc",
) -> Page[Tenant]:
    """Return one page of tenants, filtered by status/plan and a case-insensitive name search."""
    stmt = select(Tenant)
    if status:
        stmt = stmt.where(Tenant.status == status)
    if plan:
        stmt = stmt.where(Tenant.plan == plan)
    if search:
        stmt = stmt.where(contains(Tenant.name, search))
    order = ordering(SORTABLE[sort_by], sort_order)
    return paginate(session, stmt, limit=limit, offset=offset, order_by=(order, Tenant.id))


def update(session: Session, *, tenant_id: uuid.UUID, changes: dict[str, Any]) -> Tenant:
    """Apply `changes` (keys: name, plan, status) to the tenant and return it."""
    tenant = get(session, tenant_id=tenant_id)
    for key, value in changes.items():
        setattr(tenant, key, value)
    tenant.updated_at = utcnow()
    session.add(tenant)
    session.flush()
    return tenant

