"""In-memory OAuth2 objects of the sandbox, implementing Authlib's model mixins.

One resource owner ("sandbox-user") and one confidential client, both derived from the live
SandboxConfig. Codes and tokens are plain dataclasses kept by SandboxState.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin

from connectors.sandbox.config import SandboxConfig

CODE_TTL_SECONDS = 60  # RFC 6749 §4.1.2 asks for short-lived codes; 60 s is plenty for a redirect


@dataclass(frozen=True)
class SandboxUser:
    """The sandbox's only resource owner; every credential acts as this user."""

    id: str = "usr_sandbox"
    username: str = "sandbox-user"
    name: str = "Sandbox User"
    email: str = "sandbox-user@sandbox.test"


SANDBOX_USER = SandboxUser()


class SandboxClient(ClientMixin):
    """The registered confidential client, read from `config` on every call."""

    GRANT_TYPES = ("authorization_code", "refresh_token")
    AUTH_METHODS = ("client_secret_basic", "client_secret_post")

    def __init__(self, config: SandboxConfig) -> None:
        self._config = config

    @property
    def client_id(self) -> str:
        """The client identifier."""
        return self._config.client_id

    def get_client_id(self) -> str:
        """Return the client identifier."""
        return self._config.client_id

    def get_default_redirect_uri(self) -> None:
        """Return None: every authorization request must name its redirect_uri explicitly."""
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """Return the granted scope string: all configured scopes when omitted, None if any is unknown."""
        if not scope:
            return " ".join(self._config.scopes)
        requested = list(dict.fromkeys(scope.split()))
        if any(item not in self._config.scopes for item in requested):
            return None
        return " ".join(requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Return True only for an exact match with a registered redirect URI."""
        return redirect_uri in self._config.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        """Compare `client_secret` in constant time."""
        return hmac.compare_digest(client_secret.encode(), self._config.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Accept client_secret_basic and client_secret_post everywhere; never `none` (not a public client)."""
        return method in self.AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        """Only the authorization code flow exists (no implicit grant, RFC 9700 §2.1.2)."""
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """Allow authorization_code and refresh_token."""
        return grant_type in self.GRANT_TYPES


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    """An issued code, bound to client, redirect URI and PKCE challenge. `issued_at` in epoch seconds.

    `family_id` names the grant: every token obtained from this code, and from refreshing those
    tokens, carries it, so a replayed code or refresh token can revoke them all together.
    """

    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: SandboxUser
    code_challenge: str
    code_challenge_method: str
    issued_at: float
    family_id: str
    used: bool = False

    def get_redirect_uri(self) -> str:
        """Return the redirect URI the code was issued for."""
        return self.redirect_uri

    def get_scope(self) -> str:
        """Return the granted scope string."""
        return self.scope

    def is_expired(self, now: float) -> bool:
        """Return True once CODE_TTL_SECONDS have passed since issue."""
        return now >= self.issued_at + CODE_TTL_SECONDS


@dataclass
class Token(TokenMixin):
    """An access token and its refresh token. Times are epoch seconds, lifetimes seconds.

    `rotated` marks a refresh token already exchanged; presenting it again is replay (RFC 9700
    §4.14.2). `access_revoked` / `refresh_revoked` are set by /oauth/revoke and family revocation.
    """

    access_token: str
    refresh_token: str | None
    client_id: str
    scope: str
    user: SandboxUser
    family_id: str
    issued_at: float
    expires_in: int
    refresh_expires_at: float
    access_revoked: bool = False
    refresh_revoked: bool = False
    rotated: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        """Return True if the token was issued to `client`."""
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        """Return the granted scope string."""
        return self.scope

    def get_expires_in(self) -> int:
        """Return the access token lifetime in seconds."""
        return self.expires_in

    def is_expired(self) -> bool:
        """Return True once the access token lifetime has passed."""
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        """Return True if the access token was revoked (directly or with its family)."""
        return self.access_revoked

    def is_refresh_usable(self, now: float) -> bool:
        """Return True if the refresh token is neither revoked, rotated nor expired at `now`."""
        return not (self.refresh_revoked or self.rotated or now >= self.refresh_expires_at)

    def get_user(self) -> SandboxUser:
        """Return the resource owner."""
        return self.user
