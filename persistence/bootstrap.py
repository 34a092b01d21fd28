"""First-start set-up: the first super admin and the provider catalog. Idempotent."""

from __future__ import annotations

import json
from importlib import resources

from sqlmodel import Session

from persistence import providers, users

CATALOG_FILE = "providers.json"
def catalog_entries() -> list[dict]:
    """Return the shipped catalog (`persistence/data/providers.json`) with column-named keys."""
    raw = json.loads(resources.files("persistence").joinpath("data", CATALOG_FILE).read_text(encoding="utf-8"))
    return [providers.document_columns(entry) for entry in raw]


def seed_catalog(session: Session, entries: list[dict] | None = None) -> int:
    """Insert the catalog entries whose `provider` key is not present yet; return how many were added."""
    return sum(providers.upsert_seed(session, fields=entry) for entry in (catalog_entries() if entries is None else entries))


def ensure_super_admin(session: Session, *, email: str, password: str) -> bool:
    """Create the first super admin when none exists; return True if one was created."""
    if users.super_admin_exists(session):
        return False
    users.create(session, tenant_id=None, email=email, name="Platform Admin", role="super_admin", password=password)
    return True


def sandbox_entry(base_url: str, *, client_id: str, client_secret: str) -> dict:
    """Return the catalog entry (column names) of the bundled sandbox CRM served at `base_url`."""
    base = base_url.rstrip("/")
    return providers.document_columns({
        "name": "Sandbox CRM",
        "displayName": "Sandbox CRM",
        "description": "The hub's bundled offline CRM: OAuth2 with PKCE, API key or basic auth, paged accounts and contacts.",
        "category": "crm",
        "provider": "sandbox_crm",
        "status": "active",
        "audience": "tenant",
        "capabilities": ["read", "search", "sync"],
        "supportedSyncDirections": ["pull"],
        "supportsRealtime": False,
        "supportsWebhooks": False,
        "supportsNotifications": False,
        "supportsSearch": True,
        "searchableEntities": ["Account", "Contact"],
        "searchCapabilities": {"fullText": True, "fieldSpecific": False, "filtered": True},
        "requiresUserScoping": False,
        "authType": "oauth2",
        "oauthConfig": {
            "authorizationUrl": f"{base}/oauth/authorize",
            "tokenUrl": f"{base}/oauth/token",
            "revocationUrl": f"{base}/oauth/revoke",
            "scopes": ["crm.read", "crm.write"],
            "scopeSeparator": " ",
            "pkceRequired": True,
            "clientId": client_id,
            "clientSecret": client_secret,
        },
        "availableEntities": [
            {"name": "Account", "displayName": "Accounts", "fields": [{"name": "name", "type": "string"}],
             "sync": _sandbox_sync("accounts", title="name", searchable=["name"])},
            {"name": "Contact", "displayName": "Contacts", "fields": [{"name": "email", "type": "string"}],
             "sync": _sandbox_sync("contacts", title="email", searchable=["email"])},
        ],
        "entityMappings": [],
        "icon": "sandbox",
        "color": "#6B46C1",
        "version": "v1",
        "isPremium": False,
        "requiredPlan": None,
        "apiBaseUrl": base,
        "testRequest": {"method": "GET", "path": "/me", "expectedStatus": 401},
        "apiKeyHeader": "X-API-Key",
    })


def _sandbox_sync(kind: str, *, title: str, searchable: list[str]) -> dict:
    """Return the sync definition of the sandbox's `kind` list (accounts | contacts): connectors/sandbox/api.py."""
    return {
        "path": f"/{kind}",
        "itemsPath": "data",
        "idField": "id",
        "updatedAtField": "updatedAt",
        "titleField": title,
        "searchableFields": searchable,
        "deletedField": "deleted",
        "paging": {"type": "cursor", "cursorParam": "cursor", "limitParam": "limit", "pageSize": 100,
                   "nextCursorPath": "nextCursor"},
        "incremental": {"param": "updated_since", "format": "rfc3339"},
        "write": {
            "create": {"method": "POST", "path": f"/{kind}"},
            "update": {"method": "PATCH", "path": f"/{kind}/{{id}}"},
            "delete": {"method": "DELETE", "path": f"/{kind}/{{id}}"},
        },
    }
