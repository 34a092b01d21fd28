"""The sandbox's OAuth2 authorization server (Authlib): /oauth/authorize, /oauth/token, /oauth/revoke.

Authorization code grant only, PKCE S256 mandatory (RFC 7636, RFC 9700 §2.1.1), exact
redirect-URI matching, single-use 60 s codes, rotating refresh tokens with replay detection
that revokes the whole token family (RFC 9700 §4.14.2), revocation per RFC 7009.
"""

from __future__ import annotations

import secrets
import time
from html import escape

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Blueprint, Flask, Response, request

from connectors.sandbox.models import SANDBOX_USER, AuthorizationCode, SandboxClient, Token
from connectors.sandbox.state import SandboxState

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class SandboxAuthorizationServer(AuthorizationServer):
    """Authlib's Flask authorization server wired to a SandboxState and its live config."""

    def __init__(self, app: Flask, state: SandboxState) -> None:
        self.state = state
        super().__init__()
        self.init_app(app)
        self.register_grant(AuthorizationCodeGrant, [RequireS256()])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(TokenRevocationEndpoint)

    def query_client(self, client_id: str) -> SandboxClient | None:
        """Return the registered client if `client_id` is its id."""
        return SandboxClient(self.state.config) if client_id == self.state.config.client_id else None

    def save_token(self, token: dict, request) -> None:
        """Store an issued token in the family of the code or refresh token it was obtained with."""
        origin = request.authorization_code or request.refresh_token
        now = time.time()
        self.state.save_token(Token(
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            client_id=request.client.get_client_id(),
            scope=token.get("scope", ""),
            user=request.user,
            family_id=origin.family_id,
            issued_at=now,
            expires_in=int(token.get("expires_in", 0)),  # Authlib omits expires_in when the TTL is 0
            refresh_expires_at=now + self.state.config.refresh_token_ttl,
        ))

    def create_bearer_token_generator(self, config) -> BearerTokenGenerator:
        """Issue opaque random tokens; the access token lifetime is read from the live config."""
        return BearerTokenGenerator(
            access_token_generator=lambda **_: "sbx_at_" + secrets.token_urlsafe(32),
            refresh_token_generator=lambda **_: "sbx_rt_" + secrets.token_urlsafe(32),
            expires_generator=lambda client, grant_type: self.state.config.access_token_ttl,
        )


class RequireS256(CodeChallenge):
    """PKCE required for every authorization request, S256 only.

    Authlib's stock extension lets confidential clients skip PKCE and accepts `plain`
    (also implied by an absent method, RFC 7636 §4.3); RFC 9700 §2.1.1 wants neither.
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri) -> None:
        """Refuse a missing challenge or any method other than S256 with `invalid_request`."""
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE 'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """Authorization code grant storing codes in SandboxState."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def save_authorization_code(self, code: str, request) -> None:
        """Store `code` bound to client, redirect URI, scope and PKCE challenge; it opens a new token family."""
        data = request.payload.data
        self.server.state.save_code(AuthorizationCode(
            code=code,
            client_id=request.client.get_client_id(),
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            user=request.user,
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
            issued_at=time.time(),
            family_id="fam_" + secrets.token_urlsafe(12),
        ))

    def query_authorization_code(self, code: str, client: SandboxClient) -> AuthorizationCode | None:
        """Return the usable code of `client` (None if unknown, expired, or replayed)."""
        return self.server.state.find_code(code, client_id=client.get_client_id())

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Mark the code redeemed (kept until expiry so a replay is recognised)."""
        self.server.state.consume_code(authorization_code)

    def authenticate_user(self, authorization_code: AuthorizationCode):
        """Return the user who approved the code."""
        return authorization_code.user


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """Refresh with rotation: every refresh issues a new refresh token and retires the old one."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        """Return the usable token; on replay of a rotated refresh token revoke its family and refuse."""
        state = self.server.state
        token = state.find_refresh_token(refresh_token)
        if token is None:
            return None
        if token.rotated:
            state.revoke_family(token.family_id)
            raise InvalidGrantError("Refresh token was already used; every token of this grant is now revoked")
        return token if token.is_refresh_usable(time.time()) else None

    def authenticate_user(self, refresh_token: Token):
        """Return the resource owner of the token."""
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        """Retire the exchanged refresh token; its access token stays valid until it expires."""
        self.server.state.mark_rotated(refresh_token)


class TokenRevocationEndpoint(RevocationEndpoint):
    """RFC 7009 revocation; revoking a refresh token revokes its whole family (RFC 7009 §2.1)."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        """Find the token by access or refresh value; the hint only orders the look-ups (RFC 7009 §2.1)."""
        state = self.server.state
        lookups = [state.find_access_token, state.find_refresh_token]
        if token_type_hint == "refresh_token":
            lookups.reverse()
        for lookup in lookups:
            if (token := lookup(token_string)) is not None:
                return token
        return None

    def revoke_token(self, token: Token, request) -> None:
        """Revoke the family for a refresh token, only the access token for an access token."""
        if request.form["token"] == token.refresh_token:
            self.server.state.revoke_family(token.family_id)
        else:
            self.server.state.revoke_access(token)


def oauth_blueprint(server: SandboxAuthorizationServer) -> Blueprint:
    """Return the blueprint of the three OAuth2 endpoints served by `server`."""
    blueprint = Blueprint("sandbox_oauth", __name__)
    state = server.state

    @blueprint.route("/oauth/authorize", methods=["GET", "POST"])
    def authorize() -> Response:
        """Validate the request, then approve as sandbox-user, deny, or show the consent page."""
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            # Redirects only when Authlib validated client and redirect_uri; otherwise a 400 body.
            return server.handle_error_response(None, error)
        if request.method == "GET" and not state.config.auto_approve and not _denied():
            return _consent_page()
        approved = request.method == "GET" or request.form.get("decision") == "approve"
        user = None if _denied() or not approved else SANDBOX_USER
        return server.create_authorization_response(request=grant.request, grant_user=user, grant=grant)

    @blueprint.post("/oauth/token")
    def issue_token() -> Response:
        """Exchange a code or refresh token; serialized so refresh rotation is atomic."""
        with state.lock:
            return server.create_token_response()

    @blueprint.post("/oauth/revoke")
    def revoke_token() -> Response:
        """Revoke an access or refresh token (RFC 7009); 200 also for unknown tokens."""
        with state.lock:
            return server.create_endpoint_response(TokenRevocationEndpoint.ENDPOINT_NAME)

    def _denied() -> bool:
        return state.config.deny_all or request.args.get("deny", "").lower() in ("1", "true", "yes")

    return blueprint


def _consent_page() -> Response:
    """Return a minimal approve/deny form that posts back to the same URL (auto_approve off)."""
    action = escape(request.full_path)
    body = (
        "<!doctype html><title>Sandbox consent</title>"
        "<h1>Authorize access for sandbox-user?</h1>"
        f"<p>Client <code>{escape(request.args.get('client_id', ''))}</code> asks for "
        f"<code>{escape(request.args.get('scope', '') or 'all scopes')}</code>.</p>"
        f'<form method="post" action="{action}">'
        '<button name="decision" value="approve">Approve</button> '
        '<button name="decision" value="deny">Deny</button></form>'
    )
    return Response(body, status=200, mimetype="text/html")
