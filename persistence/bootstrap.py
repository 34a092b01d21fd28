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


def sandbox_documents(base_url: str, *, client_id: str, client_secret: str) -> list[dict]:
    """Return the catalog documents (API field names) of the bundled sandbox CRM at `base_url`, one per auth type.

    `sandbox_crm` connects by OAuth2 (authorization code + PKCE, with `client_id`/`client_secret`
    registered at the sandbox); `sandbox_crm_api_key` (X-API-Key), `sandbox_crm_basic` (HTTP
    Basic) and `sandbox_crm_custom` (credentials sent as headers, e.g. `{"X-API-Key": ...}`) take
    the static credentials the sandbox accepts (`sandbox-api-key`, `sandbox-user`/`sandbox-password`).
    Each is checked by the sandbox's `GET /me`, which answers 401 without credentials.
    """
    base = base_url.rstrip("/")
    common = {
        "category": "crm",
        "status": "active",
        "audience": "tenant",
        "capabilities": ["read", "search", "sync"],
        "supportedSyncDirections": ["pull"],
        "supportsRealtime": False,
        "supportsWebhooks": True,
        "supportsNotifications": False,
        "supportsSearch": True,
        "searchableEntities": ["Account", "Contact"],
        "searchCapabilities": {"fullText": True, "fieldSpecific": False, "filtered": True},
        "requiresUserScoping": False,
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
        "webhookVerification": SANDBOX_WEBHOOK_VERIFICATION,
    }
    oauth = {
        "name": "Sandbox CRM",
        "displayName": "Sandbox CRM",
        "description": "The hub's bundled offline CRM, connected by OAuth2 with PKCE: paged accounts and contacts.",
        "provider": "sandbox_crm",
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
    }
    static = [
        ("api_key", "sandbox_crm_api_key", "Sandbox CRM (API key)",
         'connected with an API key in X-API-Key (`{"apiKey": "sandbox-api-key"}`)'),
        ("basic", "sandbox_crm_basic", "Sandbox CRM (basic auth)",
         'connected with HTTP Basic (`{"username": "sandbox-user", "password": "sandbox-password"}`)'),
        ("custom", "sandbox_crm_custom", "Sandbox CRM (custom headers)",
         'connected with custom credentials sent as headers (`{"X-API-Key": "sandbox-api-key"}`)'),
    ]
    documents = [{**common, **oauth}]
    for auth_type, key, name, how in static:
        documents.append({**common, "name": name, "displayName": name, "provider": key, "authType": auth_type,
                          "oauthConfig": None, "description": f"The hub's bundled offline CRM, {how}."})
    return documents


def sandbox_entries(base_url: str, *, client_id: str, client_secret: str) -> list[dict]:
    """Return `sandbox_documents` as catalog entries (column names), ready for `seed_catalog`."""
    return [providers.document_columns(document)
            for document in sandbox_documents(base_url, client_id=client_id, client_secret=client_secret)]


# The sandbox's signed change notifications (connectors/sandbox/notify.py): hex HMAC-SHA256 of
# `timestamp + "." + body` in X-Sandbox-Signature, Unix seconds in X-Sandbox-Timestamp, the event id
# in X-Sandbox-Event-Id; the body `{"id", "type", "entity", "data", "occurred_at"}` carries the
# whole record in `data` (a deleted one with `deleted: true`).
SANDBOX_WEBHOOK_VERIFICATION = {
    "scheme": "hmac_sha256",
    "signatureHeader": "X-Sandbox-Signature",
    "signatureEncoding": "hex",
    "signedPayload": "{timestamp}.{body}",
    "timestampHeader": "X-Sandbox-Timestamp",
    "toleranceSeconds": 300,
    "eventIdHeader": "X-Sandbox-Event-Id",
    "routes": [
        {"entity": "Account", "matchField": "entity", "matchValue": "accounts", "externalIdField": "data.id",
         "recordField": "data"},
        {"entity": "Contact", "matchField": "entity", "matchValue": "contacts", "externalIdField": "data.id",
         "recordField": "data"},
    ],
}


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
        "fetch": {"method": "GET", "path": f"/{kind}/{{id}}"},
    }
