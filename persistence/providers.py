"""Queries over the provider catalog (platform-owned rows, no tenant).

Seed: the integration API implementation, "Integration Provider Endpoints" and the catalog
operations of "Tenant Integration Endpoints".
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence.errors import Conflict, InvalidInput, NotFound
from persistence import sync_definitions, vault, webhook_verification
from persistence.models import Integration, Provider, as_utc, utcnow
from persistence.pages import After, Page, contains, ordering, paginate, paginate_after

# Provider document field (API and seed file) -> Provider column; the one source of the mapping.
DOCUMENT_FIELDS = {
    "name": "name",
    "displayName": "display_name",
    "description": "description",
    "category": "category",
    "provider": "provider",
    "status": "status",
    "audience": "audience",
    "capabilities": "capabilities",
    "supportedSyncDirections": "supported_sync_directions",
    "supportsRealtime": "supports_realtime",
    "supportsWebhooks": "supports_webhooks",
    "supportsNotifications": "supports_notifications",
    "supportsSearch": "supports_search",
    "searchableEntities": "searchable_entities",
    "searchCapabilities": "search_capabilities",
    "requiresUserScoping": "requires_user_scoping",
    "authType": "auth_type",
    "oauthConfig": "oauth_config",
    "availableEntities": "available_entities",
    "entityMappings": "entity_mappings",
    "icon": "icon",
    "color": "color",
    "version": "version",
    "isPremium": "is_premium",
    "requiredPlan": "required_plan",
    "apiBaseUrl": "api_base_url",
    "testRequest": "test_request",
    "apiKeyHeader": "api_key_header",
    "webhookVerification": "webhook_verification",
}


def document_columns(document: dict[str, Any]) -> dict[str, Any]:
    """Translate provider document fields (API request body, seed entry) into Provider column names."""
    return {DOCUMENT_FIELDS[key]: value for key, value in document.items() if key in DOCUMENT_FIELDS}


SORTABLE = {
    "name": Provider.name,
    "displayName": Provider.display_name,
    "provider": Provider.provider,
    "createdAt": Provider.created_at,
    "updatedAt": Provider.updated_at,
}


def create(session: Session, *, fields: dict[str, Any]) -> Provider:
    """Add a provider from column-named `fields`; raise Conflict if its `provider` key exists."""
    _ensure_key_free(session, key=fields["provider"])
    secret = _take_client_secret(fields)
    row = Provider(**fields)
    _store_client_secret(row, secret)
    check_rules(row)
    session.add(row)
    session.flush()
    return row


def get(session: Session, *, provider_id: uuid.UUID, category: str | None = None) -> Provider:
    """Return the provider; NotFound(PROVIDER_NOT_FOUND) if absent or not in `category`."""
    row = session.get(Provider, provider_id)
    if row is None or (category is not None and row.category != category):
        raise NotFound("provider", provider_id, code="PROVIDER_NOT_FOUND")
    return row


def get_listed(session: Session, *, provider_id: uuid.UUID, category: str | None = None) -> Provider:
    """Return a provider visible in the tenant catalog (audience=tenant, status=active), else NotFound."""
    row = get(session, provider_id=provider_id, category=category)
    if row.audience != "tenant" or row.status != "active":
        raise NotFound("provider", provider_id, code="PROVIDER_NOT_FOUND")
    return row


def list_page(
    session: Session,
    *,
    limit: int,
    offset: int = 0,
    after: After | None = None,
    category: str | None = None,
    status: str | None = None,
    audience: str | None = None,
    search: str | None = None,
    sort_by: str = "name",
    sort_order: str = "asc",
) -> Page[Provider]:
    """Return one page of providers filtered by category/status/audience and a text search.

    The search matches name, display name, provider key and description, case-insensitively.
    Rows are in `sort_by` order with ties broken by id in the same direction; the page starts
    at `offset`, or strictly after `after` (keyset: no count, cost independent of the depth).
    """
    stmt = select(Provider)
    if category:
        stmt = stmt.where(Provider.category == category)
    if status:
        stmt = stmt.where(Provider.status == status)
    if audience:
        stmt = stmt.where(Provider.audience == audience)
    if search:
        stmt = stmt.where(
            sa.or_(
                contains(Provider.name, search),
                contains(Provider.display_name, search),
                contains(Provider.provider, search),
                contains(Provider.description, search),
            )
        )
    keys = (SORTABLE[sort_by], Provider.id)
    if after is not None:
        return paginate_after(session, stmt, limit=limit, keys=keys, descending=sort_order == "desc", after=after)
    return paginate(session, stmt, limit=limit, offset=offset, order_by=[ordering(key, sort_order) for key in keys])


def sort_key(row: Provider, sort_by: str) -> tuple[Any, uuid.UUID]:
    """Return the row's `(sort value, id)` in `sort_by` order: where a keyset page after it starts."""
    value = getattr(row, SORTABLE[sort_by].key)
    return (as_utc(value) if isinstance(value, datetime) else value), row.id


def update(session: Session, *, provider_id: uuid.UUID, category: str, fields: dict[str, Any]) -> Provider:
    """Apply column-named `fields` to the provider and return it; Conflict on a taken `provider` key."""
    row = get(session, provider_id=provider_id, category=category)
    if "provider" in fields and fields["provider"] != row.provider:
        _ensure_key_free(session, key=fields["provider"])
    secret = _take_client_secret(fields)
    _store_client_secret(row, secret)
    for key, value in fields.items():
        setattr(row, key, value)
    check_rules(row)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def check_rules(row: Provider) -> None:
    """Raise InvalidInput when the provider's fields contradict each other.

    An oauth2 provider needs an `oauthConfig`; a `requiredPlan` only makes sense on a premium
    provider; a `testRequest` needs an `apiBaseUrl` to be sent to.
    """
    if row.auth_type == "oauth2" and not row.oauth_config:
        raise InvalidInput("oauthConfig is required when authType is oauth2", details={"field": "oauthConfig"})
    if row.required_plan and not row.is_premium:
        raise InvalidInput("requiredPlan is only allowed when isPremium is true", details={"field": "requiredPlan"})
    if row.test_request and not row.api_base_url:
        raise InvalidInput("testRequest needs an apiBaseUrl", details={"field": "apiBaseUrl"})
    sync_definitions.validate_entity_definitions(row.available_entities)
    webhook_verification.validate(row.webhook_verification, row.available_entities)


def delete(session: Session, *, provider_id: uuid.UUID, category: str) -> Provider:
    """Delete the provider and return the deleted row; Conflict while tenants have it enabled."""
    row = get(session, provider_id=provider_id, category=category)
    if session.exec(select(Integration.id).where(Integration.provider_id == row.id)).first() is not None:
        raise Conflict("Tenants have integrations of this provider; disable it instead",
                       details={"reason": "provider_in_use"})
    session.delete(row)
    session.flush()
    return row


def upsert_seed(session: Session, *, fields: dict[str, Any]) -> bool:
    """Insert a catalog seed entry unless its `provider` key exists; return True if inserted.

    Existing rows are left as they are, so an admin's edits survive a restart (idempotent seeding).
    """
    if session.exec(select(Provider.id).where(Provider.provider == fields["provider"])).first() is not None:
        return False
    fields = dict(fields)
    secret = _take_client_secret(fields)
    row = Provider(**fields)
    _store_client_secret(row, secret)
    session.add(row)
    session.flush()
    return True


def _ensure_key_free(session: Session, *, key: str) -> None:
    if session.exec(select(Provider.id).where(Provider.provider == key)).first() is not None:
        raise Conflict(f"A provider with key '{key}' already exists", details={"field": "provider"})


def client_secret(row: Provider) -> str | None:
    """Return the provider's OAuth client secret, opened from the vault, or None if unset."""
    return vault.open_sealed(row.oauth_client_secret, binding=f"provider:{row.id}") if row.oauth_client_secret else None


def _take_client_secret(fields: dict[str, Any]) -> str | None:
    # The secret travels inside oauthConfig in the API but is stored sealed in its own column.
    config = fields.get("oauth_config")
    if not isinstance(config, dict) or "clientSecret" not in config:
        return None
    fields["oauth_config"] = {k: v for k, v in config.items() if k != "clientSecret"}
    return config["clientSecret"]


def _store_client_secret(row: Provider, secret: str | None) -> None:
    if secret is None:
        return  # absent: unchanged
    row.oauth_client_secret = vault.seal(secret, binding=f"provider:{row.id}") if secret else None


def reseal_client_secrets(session: Session) -> int:
    """Re-seal every provider's OAuth client secret under the newest key; return how many changed."""
    changed = 0
    for row in session.exec(select(Provider).where(Provider.oauth_client_secret.is_not(None)).with_for_update()).all():
        if vault.needs_rotation(row.oauth_client_secret):
            row.oauth_client_secret = vault.seal(client_secret(row), binding=f"provider:{row.id}")
            session.add(row)
            changed += 1
    return changed
