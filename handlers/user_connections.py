"""Operations of tag `user-connections` (openapi/paths/user-connections.yaml): a user's own
connections to user-scoped integrations. Seed: "User-Scoped Connection Endpoints"."""

from __future__ import annotations

from uuid import UUID

from connectors import connection_flows as flows
from handlers import views
from persistence import connections, integrations
from persistence.db import transaction
from server import runtime
from server.security import Caller, browser_nonce_for, oauth_binding_cookie


def start_user_oauth_connection(id: str, body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Start the authorization code flow for the caller's own account."""
    caller = Caller.from_token(token_info)
    nonce = browser_nonce_for(token_info)  # a cookie session: the flow completes only in this browser
    url, state = flows.start_oauth(_flows(), actor=caller.actor, integration_id=UUID(id),
                                   return_url=body["returnUrl"], user_scoped=True, browser_nonce=nonce)
    return {"authorizationUrl": url, "state": state}, 200, oauth_binding_cookie(state, nonce)


def get_user_connection(id: str, token_info: dict) -> dict:
    """Tell whether the caller has connected their own account to the integration."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        integrations.get(session, tenant_id=caller.tenant_id, integration_id=UUID(id))
        row = connections.find(session, tenant_id=caller.tenant_id, integration_id=UUID(id), user_id=caller.user_id)
        if row is None:
            return {"connected": False}
        return {"connected": row.status == "active", "connectionId": str(row.id), "status": row.status,
                "lastConnectedAt": views.timestamp(row.connected_at)}


def disconnect_user_connection(id: str, token_info: dict) -> dict:
    """Destroy the caller's own connection's credentials (OAuth tokens revoked at the provider)."""
    caller = Caller.from_token(token_info)
    row = flows.disconnect(_flows(), actor=caller.actor, integration_id=UUID(id),
                           action="connection.user_disconnect", user_id=caller.user_id)
    return {"success": True, "disconnectedAt": views.timestamp(row.disconnected_at)}


def _flows() -> flows.FlowContext:
    # Connection events carry the connection as GET .../connection shows it.
    return runtime.get().flows(present_connection=views.connection)
