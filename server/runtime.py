"""What the app factory builds once and the operation functions read: settings, token config,
and the authorization rules declared in the spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from connectors.connection_flows import FlowContext
from connectors.outbound import OutboundPolicy
from server.settings import Settings
from server.tokens import TokenConfig


@dataclass
class Runtime:
    """The serving process's configuration, set by `server.app.create_app`.

    `role_scopes` maps a role to the scopes it grants (`x-role-scopes` of the bearer scheme);
    `operation_scopes` maps an operationId to the scopes it requires (`x-required-scopes`), or
    None for a public operation (`security: []`).
    """

    settings: Settings
    tokens: TokenConfig
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    rate_limits: Any = None
    idempotent_operations: set[str] = field(default_factory=set)
    # Operations whose answers carry a secret: `Cache-Control: no-store` (server/security.py).
    no_store_operations: set[str] = field(default_factory=set)
    # (path pattern, methods) of every operation, for the `Allow` header of a 405.
    routes: list[tuple[Any, tuple[str, ...]]] = field(default_factory=list)

    def allowed_methods(self, path: str) -> tuple[str, ...]:
        """The methods the contract defines for `path` (HEAD with GET), or () for an unknown path."""
        for pattern, methods in self.routes:
            if pattern.fullmatch(path):
                return methods
        return ()
    role_scopes: dict[str, list[str]] = field(default_factory=dict)
    operation_scopes: dict[str, list[str] | None] = field(default_factory=dict)
    # The event types the contract declares (`x-event-type` schemas): name, description, schema, example.
    event_types: list[dict[str, Any]] = field(default_factory=list)


    def flows(self, *, present_connection: Callable[[Any], dict[str, Any]]) -> FlowContext:
        """What the connection flows need: outbound policy, OAuth redirect URI, allowed origins,
        and the caller's view of a connection (the data of the events the flows record)."""
        return FlowContext(policy=self.outbound, redirect_uri=self.settings.oauth_redirect_uri,
                           allowed_origins=tuple(self.settings.origins), present_connection=present_connection)


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make `runtime` the process's runtime (one app per process)."""
    global _current
    _current = runtime


def get() -> Runtime:
    """Return the process's runtime; RuntimeError if no app was created."""
    if _current is None:
        raise RuntimeError("the app has not been created (server.app.create_app)")
    return _current
