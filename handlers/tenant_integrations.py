"""Operations of tag `tenant-integrations` (openapi/paths/tenant-integrations.yaml). Tenant admin.
Seed: integration API implementation, "Tenant Integration Endpoints"."""

from __future__ import annotations

from uuid import UUID

from handlers import views
from persistence import events, integrations, providers, tenants
from persistence.db import transaction
from server.pipeline import local_read, local_write
from server.security import Caller

BASE = "/api/v1/tenant/integrations"
# API field -> column of the writable IntegrationDocument fields.
FIELDS = {"name": "name", "description": "description", "icon": "icon", "settings": "settings",
          "allowedShardTypes": "allowed_shard_types", "searchEnabled": "search_enabled",
          "searchableEntities": "searchable_entities", "userScoped": "user_scoped"}


def _columns(body: dict) -> dict:
    return {FIELDS[key]: value for key, value in body.items() if key in FIELDS}


def _view(session, caller: Caller, id: str) -> dict:
    # The event's data: the integration as GET /tenant/integrations/{id} answers it now.
    return views.integration(integrations.get_row(session, tenant_id=caller.tenant_id, integration_id=UUID(id)))


@local_read
def list_tenant_integrations(token_info: dict, limit: int = 50, offset: int = 0, status: str | None = None,
                             providerName: str | None = None, search: str | None = None,
                             sortBy: str = "createdAt", sortOrder: str = "asc") -> dict:
    """Return one page of the caller's tenant's integrations."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        result = integrations.list_page(session, tenant_id=caller.tenant_id, limit=limit, offset=offset, status=status,
                                        provider_name=providerName, search=search, sort_by=sortBy, sort_order=sortOrder)
        return views.page("integrations", result, views.integration)


@local_write
def create_tenant_integration(body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Enable a catalog provider for the caller's tenant (plan-gated for premium providers)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        provider = providers.get_listed(session, provider_id=UUID(body["integrationId"]))
        tenant = tenants.get(session, tenant_id=caller.tenant_id)
        row = integrations.create(session, tenant=tenant, provider=provider, fields=_columns(body),
                                  enabled_by=caller.user_id)
        view = views.integration(row)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="integration.create",
                             resource_type="integration", resource_id=row.integration.id, changes=body,
                             event_type="integration.created", data=view)
        return view, 201, {"Location": f"{BASE}/{row.integration.id}"}


@local_read
def get_tenant_integration(id: str, token_info: dict) -> dict:
    """Return one integration of the caller's tenant."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        return views.integration(integrations.get_row(session, tenant_id=caller.tenant_id, integration_id=UUID(id)))


@local_write
def update_tenant_integration(id: str, body: dict, token_info: dict) -> dict:
    """Change an integration's configuration."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        integrations.update(session, tenant_id=caller.tenant_id, integration_id=UUID(id), fields=_columns(body))
        view = _view(session, caller, id)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="integration.update",
                             resource_type="integration", resource_id=id, changes=body,
                             event_type="integration.updated", data=view)
        return view


def delete_tenant_integration(id: str, token_info: dict) -> tuple[None, int]:
    """Remove an integration with its connections and their stored credentials."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        view = _view(session, caller, id)
        integrations.delete(session, tenant_id=caller.tenant_id, integration_id=UUID(id))
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="integration.delete",
                             resource_type="integration", resource_id=id, event_type="integration.deleted", data=view)
    return None, 204


def activate_tenant_integration(id: str, token_info: dict) -> dict:
    """Re-enable an integration: connected with a working connection, else pending."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = integrations.activate(session, tenant_id=caller.tenant_id, integration_id=UUID(id), by=caller.user_id)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="integration.activate",
                             resource_type="integration", resource_id=id, changes={"status": row.status},
                             event_type="integration.activated", data=_view(session, caller, id))
        return {"id": str(row.id), "status": row.status, "enabledAt": views.timestamp(row.enabled_at),
                "enabledBy": str(row.enabled_by)}


def deactivate_tenant_integration(id: str, token_info: dict) -> dict:
    """Disable an integration, keeping its configuration and connection."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = integrations.deactivate(session, tenant_id=caller.tenant_id, integration_id=UUID(id))
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="integration.deactivate",
                             resource_type="integration", resource_id=id, event_type="integration.deactivated",
                             data=_view(session, caller, id))
        return {"id": str(row.id), "status": row.status, "updatedAt": views.timestamp(row.updated_at)}
