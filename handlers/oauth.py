"""Operations of tag `oauth` (openapi/paths/oauth.yaml): the provider's redirect back to the hub."""

from __future__ import annotations

from connectors import connection_flows as flows
from handlers import views
from server import runtime
from server.security import (
    clear_oauth_binding_cookie,
    oauth_browser_nonce,
    request_actor,
)


def oauth_callback(state: str, code: str | None = None, error: str | None = None,
                   error_description: str | None = None, error_uri: str | None = None,
                   scope: str | None = None, iss: str | None = None) -> tuple[None, int, dict]:
    """Complete the authorization code flow and redirect (302) to the flow's returnUrl.

    A flow started from a cookie session completes only in the browser holding its binding cookie.
    """
    location = flows.complete_oauth(_flows(), state=state, code=code, error=error,
                                    error_description=error_description, actor=request_actor(),
                                    browser_nonce=oauth_browser_nonce(state))
    return None, 302, {"Location": location, "Cache-Control": "no-store", **clear_oauth_binding_cookie(state)}


def _flows() -> flows.FlowContext:
    # Connection events carry the connection as GET .../connection shows it.
    return runtime.get().flows(present_connection=views.connection)
