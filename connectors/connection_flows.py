"""Connecting integrations to external systems: the flows that span the hub and the provider.

Each flow keeps database transactions short and never holds one open across an outbound call:
check the credentials with the provider, then store them (with their audit entry) in one
transaction. Sources: integration API implementation, "Connection Management Endpoints";
RFC 6749, RFC 7636, RFC 9700 for OAuth; integration runbook section 3.2 for the 60 s refresh buffer.
"""

from __future__ import annotations

import base64
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

from connectors import oauth_client
from connectors.outbound import OutboundPolicy
from connectors.probe import ProbeResult, probe
from persistence import audit, connections, events, integrations, oauth_states, providers, vault
from persistence.db import transaction
from persistence.errors import DomainError, InvalidInput
from persistence.models import Connection, Integration, Provider, as_utc

REFRESH_BUFFER = timedelta(seconds=60)
_refresh_locks: dict[uuid.UUID, threading.Lock] = {}
_refresh_locks_guard = threading.Lock()


class CredentialsRejected(DomainError):
    """The provider refused the credentials (401/403 to the authenticated test request)."""

    code = "INVALID_CREDENTIALS"
    status = 400


class ConnectionFailed(DomainError):
    """The provider could not be reached, or answered unusably."""

    code = "CONNECTION_FAILED"
    status = 502


@dataclass(frozen=True)
class FlowContext:
    """What a flow needs from the hub: outbound policy, redirect URI, allowed return origins.

    `present_connection` shapes a connection as the API returns it (the handlers' view): the
    flows record each change with its event, whose `data` is that view, and connectors cannot
    import handlers, so the caller hands the view in.
    """

    policy: OutboundPolicy
    redirect_uri: str
    allowed_origins: tuple[str, ...]
    present_connection: Callable[[Connection], dict[str, Any]]


def check_return_url(url: str, allowed_origins: tuple[str, ...]) -> str:
    """Return `url` if its origin (scheme://host[:port]) is allowed; InvalidInput otherwise (no open redirect)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if parts.scheme not in ("http", "https") or not parts.netloc or origin not in {o.lower().rstrip("/") for o in allowed_origins}:
        raise InvalidInput("returnUrl must be on an allowed origin (ALLOWED_ORIGINS)", details={"field": "returnUrl"})
    return url


def auth_headers(provider: Provider, auth_type: str, credentials: dict[str, Any]) -> dict[str, str]:
    """Return the request headers that present `credentials` to the provider.

    oauth2: `Authorization: Bearer`; api_key: the provider's `apiKeyHeader` (default
    `Authorization: Bearer`); basic: RFC 7617; custom: each entry as a header.
    """
    if auth_type == "oauth2":
        return {"Authorization": f"Bearer {credentials['accessToken']}"}
    if auth_type == "api_key":
        header = provider.api_key_header
        return {header: credentials["apiKey"]} if header else {"Authorization": f"Bearer {credentials['apiKey']}"}
    if auth_type == "basic":
        pair = f"{credentials['username']}:{credentials['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {str(k): str(v) for k, v in credentials.items()}


def call_provider(provider: Provider, headers: dict[str, str], policy: OutboundPolicy) -> ProbeResult:
    """Send the provider's test request with `headers`; success means any 2xx."""
    if not provider.api_base_url or not provider.test_request:
        raise InvalidInput("The provider has no apiBaseUrl and testRequest to call", details={"field": "testRequest"})
    return probe(provider.api_base_url, method=provider.test_request["method"], path=provider.test_request["path"],
                 expected_status=None, policy=policy, headers=headers)


def verify_static(provider: Provider, auth_type: str, credentials: dict[str, Any], policy: OutboundPolicy) -> None:
    """Check API key / basic / custom credentials with the provider before storing them.

    Raises CredentialsRejected on 401/403, ConnectionFailed when the provider is unreachable or
    answers anything else.
    """
    result = call_provider(provider, auth_headers(provider, auth_type, credentials), policy)
    if result.success:
        return
    if result.status in (401, 403):
        raise CredentialsRejected(f"The provider refused the credentials ({result.status})",
                                  details={"providerStatus": result.status})
    raise ConnectionFailed(result.error or "The provider did not answer", details={"providerStatus": result.status})


def connect_static(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, auth_type: str,
                   credentials: dict[str, Any], display_name: str | None) -> Connection:
    """Connect an integration with API key / basic / custom credentials (checked first, then stored)."""
    with transaction() as session:
        integration, provider = _integration_and_provider(session, actor.tenant_id, integration_id)
        _ensure_auth_type(provider, auth_type)
    verify_static(provider, auth_type, credentials, ctx.policy)
    with transaction() as session:
        integration = integrations.get(session, tenant_id=actor.tenant_id, integration_id=integration_id)
        row = connections.store(session, integration=integration, user_id=None, auth_type=auth_type,
                                credentials=credentials, display_name=display_name)
        events.record_change(session, tenant_id=actor.tenant_id, actor=actor, action=f"connection.connect_{auth_type}",
                             resource_type="connection", resource_id=row.id, event_type="connection.connected",
                             data=ctx.present_connection(row),
                             changes={"integrationId": str(integration_id), "displayName": display_name})
    return row


_CREDENTIAL_KEYS = {
    "api_key": ({"apiKey"}, set()),
    "basic": ({"username", "password"}, set()),
    "oauth2": ({"accessToken"}, {"refreshToken", "expiresAt"}),
}


def normalize_credentials(auth_type: str, credentials: dict[str, Any]) -> dict[str, Any]:
    """Check a credential set has exactly the keys its type takes; InvalidInput naming them otherwise.

    api_key `{apiKey}`, basic `{username, password}`, oauth2 `{accessToken, refreshToken?,
    expiresAt?}` (RFC 3339), custom: any header names.
    """
    if auth_type not in _CREDENTIAL_KEYS:
        return dict(credentials)
    required, optional = _CREDENTIAL_KEYS[auth_type]
    keys = set(credentials)
    if not required <= keys or keys - required - optional:
        raise InvalidInput(f"{auth_type} credentials take {sorted(required)} (optional {sorted(optional)})",
                           details={"field": "credentials"})
    if "expiresAt" in credentials:
        try:
            datetime.fromisoformat(credentials["expiresAt"].replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("credentials.expiresAt must be an RFC 3339 date-time",
                               details={"field": "credentials.expiresAt"}) from None
    return dict(credentials)


def replace_credentials(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, auth_type: str,
                        credentials: dict[str, Any]) -> Connection:
    """Replace the tenant connection's credentials (non-OAuth ones are checked with the provider first)."""
    with transaction() as session:
        integration, provider = _integration_and_provider(session, actor.tenant_id, integration_id)
        _ensure_auth_type(provider, auth_type)
    expires_at = None
    if auth_type == "oauth2":
        if "expiresAt" in credentials:
            expires_at = as_utc(datetime.fromisoformat(credentials.pop("expiresAt").replace("Z", "+00:00")))
        credentials.setdefault("refreshToken", None)
    else:
        verify_static(provider, auth_type, credentials, ctx.policy)
    with transaction() as session:
        integration = integrations.get(session, tenant_id=actor.tenant_id, integration_id=integration_id)
        existing = connections.find(session, tenant_id=actor.tenant_id, integration_id=integration_id)
        replaced = _oauth_tokens(existing)
        row = connections.store(session, integration=integration, user_id=None, auth_type=auth_type,
                                credentials=credentials, expires_at=expires_at,
                                scopes=existing.scopes if existing else None)
        events.record_change(session, tenant_id=actor.tenant_id, actor=actor, action="connection.credentials_update",
                             resource_type="connection", resource_id=row.id, event_type="connection.credentials_updated",
                             data=ctx.present_connection(row),
                             changes={"credentialType": auth_type, "credentials": credentials})
    still_used = set(credentials.values())
    revoke_at_provider(ctx, actor=actor, provider=provider, connection_id=row.id, reason="credentials_replaced",
                       tokens={k: v for k, v in replaced.items() if v not in still_used})
    return row


def disconnect(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, action: str,
               user_id: uuid.UUID | None = None) -> Connection:
    """Destroy a connection's credentials (audited as `action`, emitting `connection.disconnected`), then
    revoke its OAuth tokens at the provider.

    The local disconnect is committed first and never waits on the provider: revocation is best
    effort and audited on its own (`revoke_at_provider`). Raises NotFound without a connection.
    """
    with transaction() as session:
        integration, provider = _integration_and_provider(session, actor.tenant_id, integration_id)
        tokens = _oauth_tokens(connections.get(session, tenant_id=actor.tenant_id, integration_id=integration_id,
                                               user_id=user_id))
        row = connections.disconnect(session, tenant_id=actor.tenant_id, integration_id=integration_id,
                                     user_id=user_id)
        events.record_change(session, tenant_id=actor.tenant_id, actor=actor, action=action,
                             resource_type="connection", resource_id=row.id, event_type="connection.disconnected",
                             data=ctx.present_connection(row))
    revoke_at_provider(ctx, actor=actor, provider=provider, connection_id=row.id, reason="disconnect", tokens=tokens)
    return row


def revoke_at_provider(ctx: FlowContext, *, actor: audit.Actor, provider: Provider, connection_id: uuid.UUID,
                       reason: str, tokens: dict[str, str]) -> bool | None:
    """Revoke OAuth tokens the hub no longer uses at the provider (RFC 7009), best effort, audited.

    `tokens` maps `refreshToken` / `accessToken` to values. The refresh token is revoked when
    there is one (which ends its grant's access tokens too, RFC 7009 section 2.1), else the
    access token. Does nothing (None) when the provider declares no `oauthConfig.revocationUrl`
    or there is nothing to revoke; else records `connection.revoke` with the outcome and returns
    whether the provider confirmed. Never raises: a provider that fails does not undo anything.
    """
    app = oauth_app(provider) if (provider.oauth_config or {}).get("clientId") else None
    token, hint = ((tokens["refreshToken"], "refresh_token") if tokens.get("refreshToken")
                   else (tokens.get("accessToken"), "access_token"))
    if app is None or not app.revocation_url or not token:
        return None
    error = None
    try:
        oauth_client.revoke(app, ctx.policy, token=token, token_type_hint=hint)
    except oauth_client.ProviderUnreachable as exc:
        error = str(exc)[:300]
    with transaction() as session:
        audit.record(session, tenant_id=actor.tenant_id, actor=actor, action="connection.revoke",
                     resource_type="connection", resource_id=connection_id,
                     outcome="failure" if error else "success",
                     changes={"reason": reason, "tokenTypeHint": hint, "error": error})
    return error is None


def _oauth_tokens(row: Connection | None) -> dict[str, str]:
    """The OAuth tokens a connection holds ({} for another kind, none, or credentials that do not open)."""
    if row is None or row.auth_type != "oauth2" or not row.secret:
        return {}
    try:
        credentials = connections.credentials(row)
    except vault.VaultError:
        return {}
    return {k: credentials[k] for k in ("refreshToken", "accessToken") if credentials.get(k)}


def start_oauth(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, return_url: str,
                user_scoped: bool, browser_nonce: str | None = None) -> tuple[str, str]:
    """Begin the authorization code flow; return (authorizationUrl, state).

    `browser_nonce` (a flow started from a cookie session) binds the flow to the browser that
    holds it: `complete_oauth` then refuses a callback arriving without it
    (persistence/oauth_states.py, RFC 6749 section 10.12).

    Raises InvalidInput for a returnUrl off the allowed origins, a non-oauth2 provider, a
    provider without a registered client, or (user_scoped) an integration that is not user-scoped.
    """
    check_return_url(return_url, ctx.allowed_origins)
    verifier = oauth_client.new_code_verifier()
    with transaction() as session:
        integration, provider = _integration_and_provider(session, actor.tenant_id, integration_id)
        _ensure_auth_type(provider, "oauth2")
        if user_scoped and not integration.user_scoped:
            raise InvalidInput("This integration is not user-scoped; a tenant admin connects it for the tenant",
                               details={"field": "userScoped"})
        app = oauth_app(provider)
        state = oauth_states.create(session, tenant_id=actor.tenant_id, user_id=actor.user_id,
                                    integration_id=integration.id, user_scoped=user_scoped,
                                    code_verifier=verifier, return_url=return_url, browser_nonce=browser_nonce)
        audit.record(session, tenant_id=actor.tenant_id, actor=actor, action="connection.oauth_start",
                     resource_type="integration", resource_id=integration.id,
                     changes={"userScoped": user_scoped, "browserBound": browser_nonce is not None})
    return oauth_client.authorization_url(app, redirect_uri=ctx.redirect_uri, state=state, code_verifier=verifier), state


OTHER_BROWSER = "browser_mismatch"


def complete_oauth(ctx: FlowContext, *, state: str, code: str | None, error: str | None,
                   error_description: str | None, actor: audit.Actor, browser_nonce: str | None = None) -> str:
    """Finish the flow from the provider's redirect; return the URL to send the browser to.

    The state is consumed first (single use) and committed even when what follows fails, so a
    replay is refused. An `error` from the provider (e.g. access_denied) marks the connection
    `error` with a clean message. A flow bound to a browser (`start_oauth`) whose callback
    arrives without that browser's `browser_nonce` is refused before the code is exchanged:
    nothing is stored, the refusal is audited and the browser goes back to the returnUrl with
    `error=browser_mismatch`. Raises InvalidInput for an unknown/expired/used state.
    """
    with transaction() as session:
        pending, verifier = oauth_states.consume(session, state=state)
        integration, provider = _integration_and_provider(session, pending.tenant_id, pending.integration_id)
        app = oauth_app(provider)
    user_id = pending.user_id if pending.user_scoped else None
    who = audit.Actor(pending.user_id, None, pending.tenant_id, actor.request_id, actor.ip)
    if not oauth_states.same_browser(state, browser_nonce=browser_nonce):
        # Someone else's browser opened the authorization URL (sent, or leaked): exchanging the
        # code would link whatever provider account consented there to this tenant.
        with transaction() as session:
            audit.record(session, tenant_id=pending.tenant_id, actor=who, action="connection.oauth_callback",
                         resource_type="integration", resource_id=pending.integration_id, outcome="denied",
                         changes={"error": OTHER_BROWSER, "browserNonce": browser_nonce is not None})
        return _with_query(pending.return_url, {"status": "error", "error": OTHER_BROWSER,
                                                "integrationId": str(pending.integration_id)})
    tokens, failure = None, None
    if error or not code:
        failure = _clean_oauth_error(error or "invalid_request", error_description)
    else:
        try:
            tokens = oauth_client.exchange_code(app, ctx.policy, code=code, redirect_uri=ctx.redirect_uri,
                                                code_verifier=verifier)
        except oauth_client.GrantRejected as exc:
            failure = _clean_oauth_error(exc.error, exc.description)
        except oauth_client.ProviderUnreachable as exc:
            failure = ("connection_failed", f"The provider's token endpoint could not be reached ({exc})"[:500])
    with transaction() as session:
        integration = integrations.get(session, tenant_id=pending.tenant_id, integration_id=pending.integration_id)
        if tokens is not None:
            row = connections.store(session, integration=integration, user_id=user_id, auth_type="oauth2",
                                    credentials=tokens.as_credentials(), scopes=list(tokens.scopes),
                                    expires_at=tokens.expires_at)
        else:
            row = connections.record_failed_authorization(session, integration=integration, user_id=user_id,
                                                          error=failure[1])
        events.record_change(session, tenant_id=pending.tenant_id, actor=who, action="connection.oauth_callback",
                             resource_type="connection", resource_id=row.id, outcome="success" if tokens else "failure",
                             event_type="connection.connected" if tokens else "connection.failed",
                             data=ctx.present_connection(row),
                             changes={"integrationId": str(integration.id), "error": failure[0] if failure else None})
    outcome = {"status": "connected"} if tokens else {"status": "error", "error": failure[0]}
    return _with_query(pending.return_url, {**outcome, "integrationId": str(integration.id)})


def test_connection(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID) -> ProbeResult:
    """Call the provider with the tenant connection's (fresh) credentials and record the outcome.

    A 401/403 marks the connection `error`; a dead refresh token marks it `expired`. Raises
    NotFound when the integration has no connection.
    """
    with transaction() as session:
        integration, provider = _integration_and_provider(session, actor.tenant_id, integration_id)
        connection = connections.get(session, tenant_id=actor.tenant_id, integration_id=integration_id)
        connection_id = connection.id
    credentials, expired = fresh_credentials(ctx, tenant_id=actor.tenant_id, integration_id=integration_id)
    if expired is not None:
        result = ProbeResult(False, None, expired, datetime.now(timezone.utc), None)
    elif not credentials:
        result = ProbeResult(False, None, "The connection has no credentials; connect it again",
                             datetime.now(timezone.utc), None)
    else:
        result = call_provider(provider, auth_headers(provider, connection.auth_type, credentials), ctx.policy)
    with transaction() as session:
        row = session.get(Connection, connection_id)
        connections.record_test(session, connection=row, success=result.success, error=result.error,
                                tested_at=result.tested_at, response_time_ms=result.response_time_ms)
        if result.status in (401, 403):
            connections.mark(session, connection=row, status="error", error=result.error)
        elif result.success and row.status == "error":
            connections.mark(session, connection=row, status="active", error=None)
        events.record_change(session, tenant_id=actor.tenant_id, actor=actor, action="connection.test",
                             resource_type="connection", resource_id=connection_id, event_type="connection.tested",
                             data=ctx.present_connection(row), outcome="success" if result.success else "failure",
                             changes={"error": result.error})
    return result


UNREADABLE = "The stored credentials cannot be decrypted for this connection; connect it again"


def fresh_credentials(ctx: FlowContext, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
                      user_id: uuid.UUID | None = None,
                      rejected_token: str | None = None) -> tuple[dict[str, Any], str | None]:
    """Return the connection's credentials, refreshing an OAuth token that expires within 60 s.

    `rejected_token` is an access token the provider just answered 401 to: the token is then
    refreshed whatever its recorded expiry (unless another caller already replaced it), and a
    token endpoint that cannot be reached yields ({}, reason) rather than the dead token.
    See `_fresh_credentials`. Credentials that do not open (tampered, or copied from another
    row) mark the connection `error` instead of failing the request.
    """
    try:
        return _fresh_credentials(ctx, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id,
                                  rejected_token=rejected_token)
    except vault.VaultError:
        with transaction() as session:
            row = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
            if row is not None:
                connections.mark(session, connection=row, status="error", error=UNREADABLE)
        return {}, UNREADABLE


def _fresh_credentials(ctx: FlowContext, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
                       user_id: uuid.UUID | None = None,
                       rejected_token: str | None = None) -> tuple[dict[str, Any], str | None]:
    """Return the connection's credentials, refreshing an OAuth token that expires within 60 s.

    One refresh at a time per connection: a process lock plus the row lock (PostgreSQL), and
    the expiry is re-read under them, so a second caller uses the first caller's new token.
    The rotated refresh token is saved in the same transaction as the access token. A refresh
    the provider refuses (invalid_grant) marks the connection `expired` and is not retried;
    the second element of the answer is then the reason, else None.
    """
    with transaction() as session:
        row = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
        if row is None or row.status == "revoked":
            return {}, None
        if row.status == "expired":
            return {}, row.validation_error or "The connection expired; authorize it again"
        if not _needs_refresh(row) and not (rejected_token and row.auth_type == "oauth2"):
            return connections.credentials(row), None
        connection_id = row.id
    with _lock_for(connection_id):
        with transaction() as session:
            row = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id,
                                   lock=True)
            current = connections.credentials(row)
            if row.status == "expired":
                return {}, row.validation_error or "The connection expired; authorize it again"
            # A rejected token that is no longer the stored one was already refreshed by another caller.
            forced = rejected_token is not None and current.get("accessToken") == rejected_token
            if not _needs_refresh(row) and not forced:
                return current, None
            provider = session.get(Provider, session.get(Integration, row.integration_id).provider_id)
            if not current.get("refreshToken"):
                connections.mark(session, connection=row, status="expired",
                                 error="The access token expired and there is no refresh token; authorize again")
                _record_expiry(ctx, session, row, "no_refresh_token")
                return {}, row.validation_error
            try:
                tokens = oauth_client.refresh(oauth_app(provider), ctx.policy, refresh_token=current["refreshToken"])
            except oauth_client.GrantRejected as exc:
                reason = f"The provider refused the refresh token ({exc.error}); authorize the connection again"
                connections.mark(session, connection=row, status="expired", error=reason)
                _record_expiry(ctx, session, row, exc.error)
                return {}, reason
            except oauth_client.ProviderUnreachable as exc:
                if forced:
                    return {}, f"Token refresh failed: {exc}"
                return current, None if not _expired(row) else f"Token refresh failed: {exc}"
            connections.replace_tokens(session, connection=row, credentials=tokens.as_credentials(),
                                       expires_at=tokens.expires_at)
            audit.record(session, tenant_id=tenant_id, actor=audit.Actor(None, None, tenant_id),
                         action="connection.refresh", resource_type="connection", resource_id=row.id)
            return tokens.as_credentials(), None


def expire(ctx: FlowContext, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, user_id: uuid.UUID | None,
           reason: str, error: str) -> None:
    """Mark the connection `expired` with `reason` and emit `connection.expired` (audited with `error`).

    For a provider that keeps refusing freshly refreshed credentials (401 after a refresh):
    nothing the hub can do cures it but a new authorization. Does nothing without a connection.
    """
    with transaction() as session:
        row = connections.find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id,
                               lock=True)
        if row is None or row.status == "expired":
            return
        connections.mark(session, connection=row, status="expired", error=reason[:500])
        _record_expiry(ctx, session, row, error)


def _record_expiry(ctx: FlowContext, session, row: Connection, error: str) -> None:
    # The hub itself (no request caller) found the grant dead: `connection.expired` tells the
    # tenant to authorize again without polling.
    events.record_change(session, tenant_id=row.tenant_id, actor=audit.Actor(None, None, row.tenant_id),
                         action="connection.refresh", resource_type="connection", resource_id=row.id,
                         outcome="failure", event_type="connection.expired", data=ctx.present_connection(row),
                         changes={"error": error})


def oauth_app(provider: Provider) -> oauth_client.OAuthApp:
    """The hub's OAuth registration at `provider`; InvalidInput when none is configured."""
    config = provider.oauth_config or {}
    if not config.get("clientId"):
        raise InvalidInput("The provider has no OAuth client registered (oauthConfig.clientId)",
                           details={"field": "oauthConfig.clientId"})
    return oauth_client.OAuthApp(
        authorization_url=config["authorizationUrl"],
        token_url=config["tokenUrl"],
        client_id=config["clientId"],
        client_secret=providers.client_secret(provider),
        scopes=tuple(config.get("scopes") or ()),
        scope_separator=config.get("scopeSeparator") or " ",
        revocation_url=config.get("revocationUrl") or None,
    )


def _integration_and_provider(session, tenant_id, integration_id) -> tuple[Integration, Provider]:
    integration = integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    return integration, session.get(Provider, integration.provider_id)


def _ensure_auth_type(provider: Provider, auth_type: str) -> None:
    # Custom credentials are headers, which any non-OAuth provider can take.
    allowed = {provider.auth_type} | ({"custom"} if provider.auth_type in ("api_key", "basic", "custom") else set())
    if auth_type not in allowed:
        raise InvalidInput(f"{provider.display_name} connects with {provider.auth_type}, not {auth_type}",
                           details={"authType": provider.auth_type})


def _needs_refresh(row: Connection) -> bool:
    return row.auth_type == "oauth2" and row.expires_at is not None and \
        as_utc(row.expires_at) - REFRESH_BUFFER <= datetime.now(timezone.utc)


def _expired(row: Connection) -> bool:
    return row.expires_at is not None and as_utc(row.expires_at) <= datetime.now(timezone.utc)


def _lock_for(connection_id: uuid.UUID) -> threading.Lock:
    with _refresh_locks_guard:
        return _refresh_locks.setdefault(connection_id, threading.Lock())


def _clean_oauth_error(error: str, description: str | None) -> tuple[str, str]:
    # The code is echoed into the return URL, so keep it to the RFC 6749 alphabet.
    code = "".join(ch for ch in error if ch.isalnum() or ch == "_")[:64] or "invalid_request"
    messages = {"access_denied": "The user or the provider denied access"}
    message = messages.get(code, f"The provider refused the authorization ({code})")
    return code, (message + (f": {description[:200]}" if description and code != "access_denied" else ""))[:500]


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
