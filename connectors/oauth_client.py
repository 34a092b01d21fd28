"""OAuth2 client for the hub's connections (Authlib's httpx client, through the outbound guard).

Authorization code grant with PKCE S256 (RFC 6749 section 4.1, RFC 7636), refresh (RFC 6749
section 6), revocation (RFC 7009). Every call to a provider passes `connectors.outbound`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import httpx

from connectors.outbound import GuardedTransport, OutboundPolicy, OutboundRefused


if TYPE_CHECKING:
    from authlib.integrations.httpx_client import OAuth2Client

# Authlib is imported where a grant happens, not at start-up: importing its client costs ~70 ms
# of every worker's cold start, and most requests never talk OAuth.


class GrantRejected(Exception):
    """The provider answered an OAuth error (`error` is e.g. invalid_grant, access_denied)."""

    def __init__(self, error: str, description: str | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class ProviderUnreachable(Exception):
    """The token URL could not be reached or answered something unusable."""


@dataclass(frozen=True)
class OAuthApp:
    """The hub's registration at one provider: endpoints, client credentials, scopes."""

    authorization_url: str
    token_url: str
    client_id: str
    client_secret: str | None
    scopes: tuple[str, ...]
    scope_separator: str = " "
    revocation_url: str | None = None


@dataclass(frozen=True)
class TokenSet:
    """Tokens from a token response; `expires_at` None when the provider gave no lifetime."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scopes: tuple[str, ...]

    def as_credentials(self) -> dict[str, Any]:
        """The form stored (sealed) in the connection."""
        return {"accessToken": self.access_token, "refreshToken": self.refresh_token}


def new_code_verifier() -> str:
    """Return a PKCE code verifier: 64 urlsafe characters (RFC 7636 section 4.1 asks 43-128)."""
    return secrets.token_urlsafe(48)


def authorization_url(app: OAuthApp, *, redirect_uri: str, state: str, code_verifier: str) -> str:
    """Return the provider URL the user's browser opens, with state and an S256 code challenge."""
    with _client(app, OutboundPolicy(), redirect_uri=redirect_uri) as client:
        url, _ = client.create_authorization_url(app.authorization_url, state=state, code_verifier=code_verifier)
    return url


def exchange_code(app: OAuthApp, policy: OutboundPolicy, *, code: str, redirect_uri: str, code_verifier: str) -> TokenSet:
    """Exchange an authorization code (with its PKCE verifier) for tokens.

    Raises GrantRejected for an OAuth error answer, ProviderUnreachable for anything else.
    """
    with _client(app, policy, redirect_uri=redirect_uri) as client:
        return _token_call(lambda: client.fetch_token(app.token_url, code=code, code_verifier=code_verifier), app)


def refresh(app: OAuthApp, policy: OutboundPolicy, *, refresh_token: str) -> TokenSet:
    """Use a refresh token; the answer may rotate it (RFC 9700 section 4.14.2).

    Raises GrantRejected (invalid_grant: the refresh token is dead, re-authorize) or
    ProviderUnreachable.
    """
    # No `scope`: RFC 6749 section 6 keeps the granted scope when it is omitted; sending the
    # configured scopes would ask for more than the grant holds if the user narrowed it.
    with _client(app, policy, scope=None) as client:
        return _token_call(lambda: client.refresh_token(app.token_url, refresh_token=refresh_token), app,
                           previous_refresh=refresh_token)


def revoke(app: OAuthApp, policy: OutboundPolicy, *, token: str, token_type_hint: str) -> None:
    """Revoke `token` at the provider's revocation endpoint (RFC 7009 section 2.1).

    `token_type_hint` is `refresh_token` or `access_token`; revoking a refresh token also ends
    the access tokens of its grant (RFC 7009 section 2.1). Raises ProviderUnreachable when the
    app has no revocation URL, the endpoint cannot be reached, or it answers other than 200
    (RFC 7009 section 2.2: 200 also for a token it does not know).
    """
    if not app.revocation_url:
        raise ProviderUnreachable("the provider has no revocation URL")
    with _client(app, policy) as client:
        try:
            response = client.revoke_token(app.revocation_url, token=token, token_type_hint=token_type_hint)
        except (OutboundRefused, httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise ProviderUnreachable(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if response.status_code != 200:
        raise ProviderUnreachable(f"the revocation endpoint answered {response.status_code}")


_CONFIGURED = object()


def _client(app: OAuthApp, policy: OutboundPolicy, scope: Any = _CONFIGURED, **kwargs: Any) -> OAuth2Client:
    from authlib.integrations.httpx_client import OAuth2Client

    return OAuth2Client(
        client_id=app.client_id,
        client_secret=app.client_secret,
        scope=(app.scope_separator.join(app.scopes) or None) if scope is _CONFIGURED else scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if app.client_secret else "none",
        transport=GuardedTransport(policy),
        timeout=httpx.Timeout(policy.timeout),
        follow_redirects=False,
        **kwargs,
    )


def _token_call(call, app: OAuthApp, previous_refresh: str | None = None) -> TokenSet:
    from authlib.integrations.base_client.errors import OAuthError

    try:
        token = call()
    except OAuthError as exc:
        raise GrantRejected(exc.error or "invalid_request", exc.description) from None
    except (OutboundRefused, httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        raise ProviderUnreachable(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not token.get("access_token"):
        raise ProviderUnreachable("the token response has no access_token")
    expires_in = token.get("expires_in")
    expires_at = datetime.now(timezone.utc) + timedelta(seconds=int(expires_in)) if expires_in else None
    scope = token.get("scope")
    scopes = tuple(scope.split(app.scope_separator if app.scope_separator in scope else " ")) if scope else app.scopes
    return TokenSet(token["access_token"], token.get("refresh_token") or previous_refresh, expires_at, scopes)
