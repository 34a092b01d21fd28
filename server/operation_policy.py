"""The hub's per-operation policies, in one middleware pass after Connexion's routing and security.

Rate limits, scopes, idempotency keys, deprecation headers and the raw body of incoming
webhooks used to be five middlewares, each reading the routing and security results out of
the scope again and wrapping the request once more (performance issue). This middleware reads
them once, applies the limits and the scopes itself, and hands the request to the idempotency,
deprecation or raw-body middleware only when the operation and the request need it, in the
order the five had: rate limit, permission, idempotency, deprecation, raw body.
"""

from __future__ import annotations

from typing import Any, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from server import runtime
from server.deprecation import DeprecationMiddleware
from server.idempotency import HEADER as IDEMPOTENCY_HEADER
from server.idempotency import IdempotencyMiddleware
from server.raw_body import RAW_BODY_PATH, RawBodyMiddleware
from server.ratelimit import RateLimitMiddleware
from server.security import PermissionMiddleware


class OperationPolicyMiddleware:
    """Apply every per-operation policy of a routed, authenticated request; pass anything else on.

    Added at `MiddlewarePosition.BEFORE_VALIDATION`: a request refused for its rate or its
    scopes is answered (429, 403) before its parameters and body are validated. `specs` are
    the served contracts (their deprecated operations).
    """

    def __init__(self, app: ASGIApp, *, specs: Iterable[dict[str, Any]]) -> None:
        self.app = app
        self.raw_body = RawBodyMiddleware(app)
        self.deprecation = DeprecationMiddleware(self.raw_body, specs=specs)
        self.idempotency = IdempotencyMiddleware(self.deprecation)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions") if scope["type"] == "http" else None
        operation_id = ((extensions or {}).get("connexion_routing") or {}).get("operation_id")
        if operation_id is None:
            await self.raw_body(scope, receive, send)
            return
        token_info = (extensions.get("connexion_context") or {}).get("token_info")
        if await RateLimitMiddleware.refused(scope, receive, send, operation_id, token_info or {}):
            return
        if await PermissionMiddleware.refused(scope, receive, send, operation_id, token_info):
            return
        if operation_id in runtime.get().idempotent_operations and _has_header(scope, IDEMPOTENCY_HEADER):
            await self.idempotency(scope, receive, send)
        elif operation_id in self.deprecation.headers:
            await self.deprecation(scope, receive, send)
        elif scope.get("method") == "POST" and RAW_BODY_PATH.search(scope.get("path", "")):
            await self.raw_body(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope.get("headers") or ())
