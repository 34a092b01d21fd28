"""Operations of tag `tenants` (openapi/paths/tenants.yaml). Super admin only."""

from __future__ import annotations

from uuid import UUID

from handlers import views
from persistence import accounts, audit, events, tenants
from persistence.db import transaction
from server.security import Caller

BASE = "/api/v1/admin/tenants"


def list_tenants(token_info: dict, limit: int = 50, offset: int = 0, status: str | None = None,
                 plan: str | None = None, search: str | None = None, sortBy: str = "createdAt",
                 sortOrder: str = "asc") -> dict:
    """Return one page of tenants."""
    with transaction() as session:
        result = tenants.list_page(session, limit=limit, offset=offset, status=status, plan=plan, search=search,
                                   sort_by=sortBy, sort_order=sortOrder)
        return views.page("tenants", result, views.tenant)


def create_tenant(body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Create a tenant, with its first tenant_admin when `admin` is given."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        tenant = accounts.create_tenant(session, name=body["name"], plan=body.get("plan", "free"), admin=body.get("admin"))
        audit.record(session, tenant_id=tenant.id, actor=caller.actor, action="tenant.create", resource_type="tenant",
                     resource_id=tenant.id, changes=body)
        return views.tenant(tenant), 201, {"Location": f"{BASE}/{tenant.id}"}


def get_tenant(tenantId: str, token_info: dict) -> dict:
    """Return one tenant."""
    with transaction() as session:
        return views.tenant(tenants.get(session, tenant_id=UUID(tenantId)))


def update_tenant(tenantId: str, body: dict, token_info: dict) -> dict:
    """Rename a tenant, change its plan or status; suspension takes effect on the next request."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        tenant = tenants.update(session, tenant_id=UUID(tenantId), changes=body)
        view = views.tenant(tenant)
        # The event belongs to the tenant changed (a super admin has no tenant of its own).
        events.record_change(session, tenant_id=tenant.id, actor=caller.actor, action="tenant.update",
                             resource_type="tenant", resource_id=tenant.id, changes=body, event_type="tenant.updated",
                             data=view)
        return view
