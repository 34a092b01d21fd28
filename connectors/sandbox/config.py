"""Settings of one sandbox provider instance. Read live: tests may change fields of a running server."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.sandbox.faults import Faults

DEFAULT_REDIRECT_URI = "http://127.0.0.1:8000/api/v1/integrations/oauth/callback"


@dataclass
class SandboxConfig:
    """Credentials, lifetimes and limits of the sandbox provider.

    Every field is read at request time, so assigning e.g. `config.access_token_ttl = 2` on a
    running server affects the next token issued. Durations are in seconds.

    - `client_id` / `client_secret`: the one registered OAuth2 client (confidential; both
      `client_secret_basic` and `client_secret_post` are accepted at /oauth/token and /oauth/revoke).
    - `redirect_uris`: registered redirect URIs; the authorization request must name one of
      them exactly (no prefix or pattern matching, RFC 9700 §4.1.3).
    - `scopes`: scopes the client may ask for; an omitted `scope` means all of them.
    - `access_token_ttl` / `refresh_token_ttl`: lifetimes of each newly issued token.
    - `api_keys`: values accepted in the `X-API-Key` header.
    - `basic_users`: username -> password pairs accepted with HTTP Basic on the REST API.
    - `rate_limit_per_minute`: requests per credential per sliding 60 s window before 429.
    - `auto_approve`: approve authorization requests at once as "sandbox-user" (no consent page).
    - `deny_all`: deny every authorization request with `error=access_denied`.
    - `records`: number of accounts generated; there are twice as many contacts.
    - `faults`: the fault injection plan at start (see connectors.sandbox.faults.Faults).
    """

    client_id: str = "hub-sandbox-client"
    client_secret: str = "hub-sandbox-secret"
    redirect_uris: list[str] = field(default_factory=lambda: [DEFAULT_REDIRECT_URI])
    scopes: list[str] = field(default_factory=lambda: ["crm.read", "crm.write"])
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    api_keys: list[str] = field(default_factory=lambda: ["sandbox-api-key"])
    basic_users: dict[str, str] = field(default_factory=lambda: {"sandbox-user": "sandbox-password"})
    rate_limit_per_minute: int = 600
    auto_approve: bool = True
    deny_all: bool = False
    records: int = 120
    faults: Faults = field(default_factory=Faults)
