"""Factories that create what a test needs through the API, with unique values and overrides."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

PASSWORD = "a-long-test-password"


def unique(prefix: str) -> str:
    """Return `prefix` with a short random suffix (lower case, safe for emails and keys)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Account:
    """A signed-in user: its tokens, ids and the headers to call the API as it."""

    email: str
    password: str
    access_token: str
    refresh_token: str
    user: dict
    tokens: dict = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def user_id(self) -> str:
        return self.user["id"]

    @property
    def tenant_id(self) -> str | None:
        return self.user["tenantId"]


class RenewingAccount(Account):
    """An account kept for a whole test session: it signs in again when its access token is
    within a minute of expiring, so session-scoped fixtures outlive the 15-minute token."""

    client: Any
    expires_at: float

    @classmethod
    def sign_in(cls, client, email: str, password: str) -> "RenewingAccount":
        account = cls.__new__(cls)
        account.client, account.email, account.password = client, email, password
        account._renew()
        return account

    def _renew(self) -> None:
        fresh = login(self.client, self.email, self.password)
        self.__dict__.update(access_token=fresh.access_token, refresh_token=fresh.refresh_token, user=fresh.user,
                             tokens=fresh.tokens, expires_at=time.monotonic() + fresh.tokens["expiresIn"] - 60)

    def __getattribute__(self, name: str) -> Any:
        if name in ("access_token", "headers") and time.monotonic() > object.__getattribute__(self, "expires_at"):
            object.__getattribute__(self, "_renew")()
        return object.__getattribute__(self, name)


def _account(email: str, password: str, body: dict) -> Account:
    return Account(email, password, body["accessToken"], body["refreshToken"], body["user"], body)


def login(client, email: str, password: str) -> Account:
    """Log in and return the account; fails the test on anything but 200."""
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return _account(email, password, response.json())


def register(client, **overrides: Any) -> Account:
    """Register a new tenant with its tenant_admin and return that admin, signed in."""
    body = {"email": f"{unique('admin')}@example.com", "password": PASSWORD, "name": "Ada Admin",
            "tenantName": unique("Tenant ")} | overrides
    response = client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    return _account(body["email"], body["password"], response.json())


def add_user(client, admin: Account, **overrides: Any) -> Account:
    """Create a user in `admin`'s tenant through the API and return it, signed in."""
    body = {"email": f"{unique('user')}@example.com", "name": "Uma User", "role": "user", "password": PASSWORD} | overrides
    response = client.post("/api/v1/tenant/users", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    return login(client, body["email"], body["password"])


def provider_body(**overrides: Any) -> dict:
    """A valid ProviderCreate body with a unique `provider` key."""
    body = {
        "name": "Acme CRM",
        "displayName": "Acme CRM",
        "description": "A CRM used by the tests.",
        "category": "crm",
        "provider": unique("acme_"),
        "status": "active",
        "audience": "tenant",
        "capabilities": ["read", "search"],
        "supportedSyncDirections": ["pull"],
        "supportsRealtime": False,
        "supportsWebhooks": False,
        "supportsNotifications": False,
        "supportsSearch": True,
        "searchableEntities": ["Contact"],
        "searchCapabilities": {"fullText": True, "fieldSpecific": False, "filtered": True},
        "requiresUserScoping": False,
        "authType": "api_key",
        "oauthConfig": None,
        "availableEntities": [{"name": "Contact", "displayName": "Contacts", "fields": [{"name": "email", "type": "string"}]}],
        "entityMappings": [],
        "icon": "acme",
        "color": "#336699",
        "version": "v1",
        "isPremium": False,
        "requiredPlan": None,
        "apiBaseUrl": "https://api.acme.example",
        "testRequest": {"method": "GET", "path": "/ping", "expectedStatus": 200},
    }
    return body | overrides


def create_provider(client, admin: Account, **overrides: Any) -> dict:
    """Create a provider as the super admin and return its document."""
    response = client.post("/api/v1/admin/integrations", json=provider_body(**overrides), headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def sandbox_provider_fields(base_url: str, **overrides: Any) -> dict:
    """ProviderCreate overrides that point a provider at the sandbox served at `base_url`."""
    return {
        "name": "Sandbox CRM",
        "displayName": "Sandbox CRM",
        "provider": unique("sandbox_"),
        "authType": "oauth2",
        "oauthConfig": {
            "authorizationUrl": f"{base_url}/oauth/authorize",
            "tokenUrl": f"{base_url}/oauth/token",
            "revocationUrl": f"{base_url}/oauth/revoke",
            "scopes": ["crm.read", "crm.write"],
            "scopeSeparator": " ",
            "pkceRequired": True,
            "clientId": "hub-sandbox-client",
            "clientSecret": "hub-sandbox-secret",
        },
        "apiBaseUrl": base_url,
        "testRequest": {"method": "GET", "path": "/me", "expectedStatus": 401},
        "apiKeyHeader": "X-API-Key",
    } | overrides


def enable_integration(client, admin: Account, provider_id: str, **overrides: Any) -> dict:
    """Enable a provider for `admin`'s tenant and return the integration document."""
    body = {"integrationId": provider_id, "name": unique("Integration ")} | overrides
    response = client.post("/api/v1/tenant/integrations", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def follow_authorization(authorization_url: str, **params: str):
    """Open the provider's authorization URL like a headless browser; return its redirect response.

    The sandbox auto-approves, so the answer is a 302 to the hub's callback (or to the callback
    with `error=` when `params` ask it to deny).
    """
    import httpx

    url = authorization_url + "".join(f"&{k}={v}" for k, v in params.items())
    return httpx.get(url, follow_redirects=False, timeout=10)


def callback_path(location: str) -> str:
    """The hub-relative path and query of a redirect to the hub's OAuth callback."""
    from urllib.parse import urlsplit

    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}"
