"""Authentication (Connexion's `x-bearerInfoFunc`) and authorization (the spec's declared scopes).

Authorization has exactly one place: `PermissionMiddleware`, which compares the caller's scopes
(granted by its role, per `x-role-scopes`) with the operation's `x-required-scopes`. An
authenticated operation that declares no scopes is denied, so forgetting to declare is safe.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from connexion.context import context as connexion_context
from connexion.context import scope as connexion_scope
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers import runtime
from handlers.errors import ApiError, error_response
from handlers.tokens import decode
from persistence import accounts
from persistence.audit import Actor
from persistence.db import transaction
from persistence.models import User

_STANDING_ERRORS = {
    "tenant_suspended": (403, "TENANT_SUSPENDED", "The tenant is suspended"),
    "tenant_offboarded": (403, "TENANT_OFFBOARDED", "The tenant has been offboarded"),
}
INVALID_TOKEN = (401, "INVALID_TOKEN", "Token is invalid")
INVALID_CREDENTIALS = (401, "INVALID_CREDENTIALS", "Invalid email or password")


def refuse_standing(failure: str | None, *, invalid: tuple[int, str, str]) -> None:
    """Raise the ApiError for a refused sign-in (`SignIn.failure`); do nothing when it is None.

    `invalid` is the error for an unknown/inactive user: INVALID_CREDENTIALS at login,
    INVALID_TOKEN for a token whose user is gone. Tenant suspension answers 403
    TENANT_SUSPENDED / TENANT_OFFBOARDED (integration runbook section 3.1).
    """
    if failure is None:
        return
    status, code, message = _STANDING_ERRORS.get(failure, invalid)
    raise ApiError(status, code, message)


def authenticate_bearer(token: str) -> dict[str, Any]:
    """Verify an access token and return Connexion's `token_info` for the request.

    Checks, on every request, that the user still exists and is active and that its tenant is
    active, so a suspension takes effect at once rather than when the token expires.
    Returns `{sub, userId, tenantId, role, scopes}`. Raises ApiError 401 INVALID_TOKEN or
    403 TENANT_SUSPENDED / TENANT_OFFBOARDED.
    """
    rt = runtime.get()
    claims = decode(rt.tokens, token, typ="access")
    with transaction() as session:
        standing = accounts.check_user(session, user_id=uuid.UUID(claims["sub"]))
    refuse_standing(standing.failure, invalid=INVALID_TOKEN)
    user = standing.user
    return {
        "sub": str(user.id),
        "userId": str(user.id),
        "tenantId": str(user.tenant_id) if user.tenant_id else None,
        "role": user.role,
        "plan": standing.tenant.plan if standing.tenant else None,
        "scopes": list(rt.role_scopes.get(user.role, [])),
    }


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of the current request, as handlers and queries need it."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID | None
    role: str
    scopes: tuple[str, ...]
    request_id: str | None
    ip: str | None

    @classmethod
    def from_token(cls, token_info: dict[str, Any]) -> "Caller":
        """Build the caller from Connexion's `token_info` and the current request's scope."""
        scope = connexion_scope._get_current_object() if _in_request() else {}
        client = scope.get("client") or (None, None)
        return cls(
            user_id=uuid.UUID(token_info["userId"]),
            tenant_id=uuid.UUID(token_info["tenantId"]) if token_info.get("tenantId") else None,
            role=token_info["role"],
            scopes=tuple(token_info.get("scopes", ())),
            request_id=(scope.get("state") or {}).get("request_id"),
            ip=client[0],
        )

    @property
    def actor(self) -> Actor:
        """The caller as the audit log records it."""
        return Actor(user_id=self.user_id, role=self.role, tenant_id=self.tenant_id, request_id=self.request_id, ip=self.ip)


def request_actor(user: User | None = None) -> Actor:
    """The audit actor of a public operation (register, login): the user if known, request id and IP."""
    scope = connexion_scope._get_current_object() if _in_request() else {}
    client = scope.get("client") or (None, None)
    return Actor(
        user_id=user.id if user else None,
        role=user.role if user else None,
        tenant_id=user.tenant_id if user else None,
        request_id=(scope.get("state") or {}).get("request_id"),
        ip=client[0],
    )


def _in_request() -> bool:
    try:
        connexion_context._get_current_object()
        return True
    except RuntimeError:
        return False


class PermissionMiddleware:
    """Deny an operation unless the caller holds every scope the spec requires of it (403).

    Runs after Connexion's security middleware (which authenticated the caller and stored
    `token_info`) and before request validation.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            extensions = scope.get("extensions") or {}
            operation_id = (extensions.get("connexion_routing") or {}).get("operation_id")
            if operation_id is not None:
                denial = self._denial(operation_id, (extensions.get("connexion_context") or {}).get("token_info"))
                if denial is not None:
                    response = error_response(403, "PERMISSION_DENIED", denial[0], denial[1])
                    await _send(response, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _denial(operation_id: str, token_info: dict | None) -> tuple[str, dict] | None:
        declared = runtime.get().operation_scopes
        if operation_id not in declared:
            return "This operation declares no permission and is denied", {}
        required = declared[operation_id]
        if required is None:  # public operation (security: [])
            return None
        held = set((token_info or {}).get("scopes", ()))
        missing = [s for s in required if s not in held]
        if missing or not required:
            return (
                f"This operation requires the scope(s) {', '.join(repr(s) for s in required)}",
                {"requiredScopes": list(required)},
            )
        return None


async def _send(response, scope: Scope, receive: Receive, send: Send) -> None:
    await Response(
        content=response.body, status_code=response.status_code, media_type="application/json", headers=response.headers
    )(scope, receive, send)
