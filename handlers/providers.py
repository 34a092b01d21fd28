"""Operations of tag `providers` (openapi/paths/providers.yaml). Super admin only.
Seed: integration API implementation, "Integration Provider Endpoints"."""

from __future__ import annotations

from uuid import UUID

from connectors.outbound import OutboundRefused, screen_url
from connectors.probe import probe
from handlers import views
from persistence import audit, providers
from persistence.db import transaction
from server import runtime
from server.errors import ApiError
from server.security import Caller

BASE = "/api/v1/admin/integrations"


def list_providers(token_info: dict, limit: int = 50, offset: int = 0, category: str | None = None,
                   status: str | None = None, audience: str | None = None, search: str | None = None,
                   sortBy: str = "name", sortOrder: str = "asc") -> dict:
    """Return one page of providers, any audience and status."""
    with transaction() as session:
        result = providers.list_page(session, limit=limit, offset=offset, category=category, status=status,
                                     audience=audience, search=search, sort_by=sortBy, sort_order=sortOrder)
        return views.page("providers", result, views.provider)


def create_provider(body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Add a provider to the catalog (409 on a duplicate `provider` key)."""
    caller = Caller.from_token(token_info)
    _screen_urls(body)
    with transaction() as session:
        row = providers.create(session, fields=providers.document_columns(body))
        audit.record(session, tenant_id=None, actor=caller.actor, action="provider.create", resource_type="provider",
                     resource_id=row.id, changes=body)
        return views.provider(row), 201, {"Location": f"{BASE}/{row.category}/{row.id}"}


def get_provider(category: str, id: str, token_info: dict) -> dict:
    """Return one provider."""
    with transaction() as session:
        return views.provider(providers.get(session, provider_id=UUID(id), category=category))


def update_provider(category: str, id: str, body: dict, token_info: dict) -> dict:
    """Change any subset of a provider's fields."""
    return _update(category, id, body, token_info, action="provider.update", shape=views.provider)


def update_provider_status(category: str, id: str, body: dict, token_info: dict) -> dict:
    """Set a provider's lifecycle status."""
    return _update(category, id, body, token_info, action="provider.status",
                   shape=lambda row: {"id": str(row.id), "status": row.status, "updatedAt": views.timestamp(row.updated_at)})


def update_provider_audience(category: str, id: str, body: dict, token_info: dict) -> dict:
    """Set whether a provider is offered to tenants."""
    return _update(category, id, body, token_info, action="provider.audience",
                   shape=lambda row: {"id": str(row.id), "audience": row.audience, "updatedAt": views.timestamp(row.updated_at)})


def delete_provider(category: str, id: str, token_info: dict) -> tuple[None, int]:
    """Remove a provider from the catalog."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = providers.delete(session, provider_id=UUID(id), category=category)
        audit.record(session, tenant_id=None, actor=caller.actor, action="provider.delete", resource_type="provider",
                     resource_id=row.id, changes={"provider": row.provider})
    return None, 204


def test_provider(category: str, id: str, token_info: dict) -> dict:
    """Send the provider's test request over real HTTP and report the outcome."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = providers.get(session, provider_id=UUID(id), category=category)
        target = (row.api_base_url, row.test_request)
    if not target[0] or not target[1]:
        raise ApiError(400, "VALIDATION_ERROR", "The provider has no apiBaseUrl and testRequest to test with",
                       details={"field": "testRequest"})
    result = probe(target[0], method=target[1]["method"], path=target[1]["path"],
                   expected_status=target[1]["expectedStatus"], policy=runtime.get().outbound)
    with transaction() as session:
        audit.record(session, tenant_id=None, actor=caller.actor, action="provider.test", resource_type="provider",
                     resource_id=id, outcome="success" if result.success else "failure",
                     changes={"error": result.error} if result.error else None)
    return views.check_result(result)


def _screen_urls(body: dict) -> None:
    # SSRF defence at configuration time; every call is checked again by the outbound guard.
    config = body.get("oauthConfig") or {}
    for field, url in (("apiBaseUrl", body.get("apiBaseUrl")), ("oauthConfig.tokenUrl", config.get("tokenUrl")),
                       ("oauthConfig.revocationUrl", config.get("revocationUrl"))):
        if url:
            try:
                screen_url(url, runtime.get().outbound)
            except OutboundRefused as exc:
                raise ApiError(400, "VALIDATION_ERROR", f"{field} may not be called: {exc}", details={"field": field}) from None


def _update(category: str, id: str, body: dict, token_info: dict, *, action: str, shape) -> dict:
    caller = Caller.from_token(token_info)
    _screen_urls(body)
    with transaction() as session:
        row = providers.update(session, provider_id=UUID(id), category=category, fields=providers.document_columns(body))
        audit.record(session, tenant_id=None, actor=caller.actor, action=action, resource_type="provider",
                     resource_id=row.id, changes=body)
        return shape(row)
