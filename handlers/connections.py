"""Operations of tag `connections` (openapi/paths/connections.yaml). Tenant admin.
Seed: integration API implementation, "Connection Management Endpoints"."""

from __future__ import annotations

from uuid import UUID

from connectors import connection_flows as flows
from handlers import views
from persistence import connections
from persistence.db import transaction
from server import ratelimit, runtime
from server.security import Caller, browser_nonce_for, oauth_binding_cookie


def start_oauth_connection(id: str, body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Start the authorization code flow (PKCE S256) for the tenant connection."""
    caller = Caller.from_token(token_info)
    nonce = browser_nonce_for(token_info)  # a cookie session: the flow completes only in this browser
    url, state = flows.start_oauth(_flows(), actor=caller.actor, integration_id=UUID(id),
                                   return_url=body["returnUrl"], user_scoped=False, browser_nonce=nonce)
    return {"authorizationUrl": url, "state": state}, 200, oauth_binding_cookie(state, nonce)


def connect_api_key(id: str, body: dict, token_info: dict) -> dict:
    """Connect with an API key, checked against the provider first."""
    return _connect(id, token_info, "api_key", {"apiKey": body["apiKey"]}, body.get("displayName"))


def connect_basic(id: str, body: dict, token_info: dict) -> dict:
    """Connect with HTTP basic credentials, checked against the provider first."""
    return _connect(id, token_info, "basic", {"username": body["username"], "password": body["password"]},
                    body.get("displayName"))


def connect_custom(id: str, body: dict, token_info: dict) -> dict:
    """Connect with provider-specific credentials sent as headers, checked first."""
    return _connect(id, token_info, "custom", body["credentials"], body.get("displayName"))


def get_connection(id: str, token_info: dict) -> dict:
    """Return the tenant connection's state (never its secret)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        return views.connection(connections.get(session, tenant_id=caller.tenant_id, integration_id=UUID(id)))


def test_connection(id: str, token_info: dict) -> dict:
    """Call the provider with the connection's credentials; limited per integration."""
    caller = Caller.from_token(token_info)
    settings = runtime.get().settings
    # Protects the provider, not the hub: not scaled by HUB_RATE_LIMIT_SCALE.
    ratelimit.enforce(f"{settings.connection_tests_per_minute}/minute", "connection-test", str(caller.tenant_id), id,
                      scaled=False)
    result = flows.test_connection(_flows(), actor=caller.actor, integration_id=UUID(id))
    shaped = views.check_result(result)
    if result.body:
        shaped["details"] = dict(list(result.body.items())[:50])
    return shaped


def disconnect(id: str, token_info: dict) -> dict:
    """Destroy the tenant connection's credentials (OAuth tokens revoked at the provider); back to pending."""
    caller = Caller.from_token(token_info)
    row = flows.disconnect(_flows(), actor=caller.actor, integration_id=UUID(id),
                           action="connection.disconnect")
    return {"success": True, "disconnectedAt": views.timestamp(row.disconnected_at)}


def update_credentials(id: str, body: dict, token_info: dict) -> dict:
    """Replace the tenant connection's credentials (checked first, except OAuth tokens)."""
    caller = Caller.from_token(token_info)
    kind = {"oauth": "oauth2"}.get(body["credentialType"], body["credentialType"])
    credentials = flows.normalize_credentials(kind, body["credentials"])
    row = flows.replace_credentials(_flows(), actor=caller.actor, integration_id=UUID(id),
                                    auth_type=kind, credentials=credentials)
    return {"success": True, "credentialSecretName": connections.secret_name(row),
            "updatedAt": views.timestamp(row.updated_at)}


def _connect(id: str, token_info: dict, auth_type: str, credentials: dict, display_name: str | None) -> dict:
    caller = Caller.from_token(token_info)
    row = flows.connect_static(_flows(), actor=caller.actor, integration_id=UUID(id),
                               auth_type=auth_type, credentials=credentials, display_name=display_name)
    return views.connected(row)


def _flows() -> flows.FlowContext:
    # Connection events carry the connection as GET .../connection shows it.
    return runtime.get().flows(present_connection=views.connection)
