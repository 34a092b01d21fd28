"""Authentication (Connexion's `x-bearerInfoFunc`) and authorization (the spec's declared scopes).

Authorization has exactly one place: `PermissionMiddleware`, which compares the caller's scopes
(granted by its role, per `x-role-scopes`) with the operation's `x-required-scopes`. An
authenticated operation that declares no scopes is denied, so forgetting to declare is safe.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from connexion.context import context as connexion_context
from connexion.context import scope as connexion_scope
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from persistence import accounts, api_tokens, audit
from persistence.audit import Actor
from persistence.db import transaction
from persistence.models import User
from server import runtime
from server.errors import ApiError, error_response
from server.observability import AUTH_FAILURES
from server.tokens import decode

_STANDING_ERRORS = {
    "tenant_suspended": (403, "TENANT_SUSPENDED", "The tenant is suspended"),
    "tenant_offboarded": (403, "TENANT_OFFBOARDED", "The tenant has been offboarded"),
}
INVALID_TOKEN = (401, "INVALID_TOKEN", "Token is invalid")
# Cookie sessions (backend integration guide, "Or using cookie-based auth"): the access token in
# an HttpOnly cookie; unsafe methods must carry a header a cross-site form cannot send.
SESSION_COOKIE = "hub_session"
# The refresh token of a cookie session: sent only to /api/v1/auth (refresh, logout).
REFRESH_COOKIE = "hub_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth"
# Binds an OAuth flow started from a cookie session to its browser; one per flow, sent only to the callback.
OAUTH_COOKIE_PREFIX = "hub_oauth_"
OAUTH_CALLBACK_PATH = "/api/v1/integrations/oauth/callback"
OAUTH_COOKIE_TTL = 600  # seconds: the state's lifetime (persistence/oauth_states.py)
CSRF_HEADER = "X-Requested-With"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
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

    Checks, on every request and in one query, that the user still exists and is active, that
    its tenant is active and that its login (the `fam` claim, a refresh-token family) is not
    revoked, so a suspension, a logout or a detected refresh-token reuse takes effect at once
    rather than when the token expires.
    Returns `{sub, userId, tenantId, role, scopes}`. Raises ApiError 401 INVALID_TOKEN or
    403 TENANT_SUSPENDED / TENANT_OFFBOARDED.
    """
    if api_tokens.looks_like_api_token(token):
        return authenticate_api_key(token)
    rt = runtime.get()
    try:
        claims = decode(rt.tokens, token, typ="access")
    except ApiError as exc:
        AUTH_FAILURES.labels(code=exc.code).inc()
        raise
    with transaction() as session:
        standing = accounts.check_session(session, user_id=uuid.UUID(claims["sub"]),
                                          family_id=uuid.UUID(claims["fam"]))
    info = _token_info(standing, scopes=rt.role_scopes.get(standing.user.role, []) if standing.user else [])
    info["familyId"] = claims["fam"]
    return info


def authenticate_cookie(token: str, request: Any = None) -> dict[str, Any]:
    """Verify the `hub_session` cookie (an access token) and return `token_info`, as the bearer scheme does.

    CSRF: a browser attaches the cookie to cross-site requests too, so POST, PATCH and DELETE
    sent with it must carry `X-Requested-With`, a header cross-site forms cannot set and
    cross-origin scripts cannot send without passing CORS (OWASP CSRF cheat sheet, "custom
    request headers"). Raises ApiError 401 INVALID_TOKEN, 403 PERMISSION_DENIED without it.
    """
    if api_tokens.looks_like_api_token(token):
        AUTH_FAILURES.labels(code="INVALID_TOKEN").inc()
        raise ApiError(*INVALID_TOKEN)
    if request is not None:
        require_csrf_header(request.method, request.headers)
    info = authenticate_bearer(token)
    info["via"] = "cookie"
    return info


def require_csrf_header(method: str, headers: Any) -> None:
    """Refuse an unsafe request authenticated by a cookie without `X-Requested-With` (403 PERMISSION_DENIED)."""
    if method.upper() not in SAFE_METHODS and not headers.get(CSRF_HEADER):
        AUTH_FAILURES.labels(code="PERMISSION_DENIED").inc()
        raise ApiError(403, "PERMISSION_DENIED", f"A cookie session needs the {CSRF_HEADER} header on {method}",
                       details={"header": CSRF_HEADER})


def session_cookie(token: str, *, max_age: int) -> str:
    """The `Set-Cookie` value of a cookie session holding `token` (empty and expired to clear it)."""
    return f"{SESSION_COOKIE}={token}; Max-Age={max_age}; Path=/api/v1; HttpOnly; Secure; SameSite=Lax"


def session_cookies(tokens: dict[str, Any] | None, *, status: int = 200) -> Response:
    """The answer of a cookie session's login or refresh (`tokens`, the `AuthTokens` body), or of its logout (None, 204).

    Carries two `Set-Cookie` headers, `hub_session` and `hub_refresh` (cleared by logout), so it
    is built here as a Starlette response: Connexion's handler tuples take one value per header.
    `hub_refresh` is `SameSite=Strict` and sent only to `/api/v1/auth`: only the hub's own
    pages ever need to send it, to refresh or log out.
    """
    access, refresh = (tokens["accessToken"], tokens["refreshToken"]) if tokens else ("", "")
    access_age, refresh_age = (tokens["expiresIn"], tokens["refreshExpiresIn"]) if tokens else (0, 0)
    response = JSONResponse(tokens, status_code=status) if tokens is not None else Response(status_code=status)
    response.headers.append("Set-Cookie", session_cookie(access, max_age=access_age))
    response.headers.append("Set-Cookie", f"{REFRESH_COOKIE}={refresh}; Max-Age={refresh_age}; "
                                          f"Path={REFRESH_COOKIE_PATH}; HttpOnly; Secure; SameSite=Strict")
    return response


def cookie_refresh_token(body_token: str | None) -> str | None:
    """The refresh token of a cookie session, when the request body names none; else None.

    A request that relies on the `hub_refresh` cookie is an unsafe one authenticated by a
    cookie, so it needs `X-Requested-With` like any other (403 PERMISSION_DENIED).
    """
    request = _current_request()
    if body_token or request is None or not request.cookies.get(REFRESH_COOKIE):
        return None
    require_csrf_header(request.method, request.headers)
    return request.cookies[REFRESH_COOKIE]


def browser_nonce_for(token_info: dict[str, Any]) -> str | None:
    """A fresh nonce binding an OAuth flow to the browser, when the caller came with the session cookie.

    None for a bearer or API token: the hub cannot tell who is at the browser then.
    """
    return secrets.token_urlsafe(32) if token_info.get("via") == "cookie" else None


def _oauth_cookie_name(state: str) -> str:
    # One cookie per flow, so two flows started in one browser do not overwrite each other's.
    return OAUTH_COOKIE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:16]


def oauth_binding_cookie(state: str, browser_nonce: str | None) -> dict[str, str]:
    """The `Set-Cookie` header holding a flow's browser nonce, sent back only to the callback ({} without one)."""
    if browser_nonce is None:
        return {}
    return {"Set-Cookie": f"{_oauth_cookie_name(state)}={browser_nonce}; Max-Age={OAUTH_COOKIE_TTL}; "
                          f"Path={OAUTH_CALLBACK_PATH}; HttpOnly; Secure; SameSite=Lax"}


def oauth_browser_nonce(state: str) -> str | None:
    """The browser nonce the OAuth callback's request carries for the flow of `state`, if any."""
    request = _current_request()
    return request.cookies.get(_oauth_cookie_name(state)) if request is not None else None


def clear_oauth_binding_cookie(state: str) -> dict[str, str]:
    """The `Set-Cookie` header that drops the flow's binding cookie once its callback has run ({} if none was sent)."""
    if oauth_browser_nonce(state) is None:
        return {}
    return {"Set-Cookie": f"{_oauth_cookie_name(state)}=; Max-Age=0; Path={OAUTH_CALLBACK_PATH}; HttpOnly; Secure; "
                          "SameSite=Lax"}


def _current_request() -> Request | None:
    return Request(connexion_scope._get_current_object()) if _in_request() else None


def authenticate_api_key(token: str) -> dict[str, Any]:
    """Verify an API token (X-API-Key, or Bearer) and return `token_info` acting as its creator.

    Its scopes are the token's, cut down to what the creator's role still grants. A revoked or
    expired token, or one whose creator is gone or inactive, answers 401 INVALID_TOKEN at once;
    an empty header answers 401 NO_TOKEN "X-API-Key header is empty".
    """
    if not token.strip():
        AUTH_FAILURES.labels(code="NO_TOKEN").inc()
        raise ApiError(401, "NO_TOKEN", "X-API-Key header is empty")
    rt = runtime.get()
    with transaction() as session:
        row = api_tokens.authenticate(session, token=token)
        standing = accounts.check_user(session, user_id=row.created_by) if row else None
    if row is None or standing.user is None or standing.user.tenant_id != row.tenant_id:
        AUTH_FAILURES.labels(code="INVALID_TOKEN").inc()
        raise ApiError(*INVALID_TOKEN)
    granted = set(rt.role_scopes.get(standing.user.role, []))
    info = _token_info(standing, scopes=[scope for scope in row.scopes if scope in granted])
    info["tokenId"] = str(row.id)
    return info


def _token_info(standing: accounts.SignIn, *, scopes: list[str]) -> dict[str, Any]:
    if standing.failure:
        AUTH_FAILURES.labels(code=standing.failure.upper()).inc()
    refuse_standing(standing.failure, invalid=INVALID_TOKEN)
    user = standing.user
    return {
        "sub": str(user.id),
        "userId": str(user.id),
        "tenantId": str(user.tenant_id) if user.tenant_id else None,
        "role": user.role,
        "plan": standing.tenant.plan if standing.tenant else None,
        "scopes": list(scopes),
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
                token_info = (extensions.get("connexion_context") or {}).get("token_info")
                if await self.refused(scope, receive, send, operation_id, token_info):
                    return
        await self.app(scope, receive, send)

    @classmethod
    async def refused(cls, scope: Scope, receive: Receive, send: Send, operation_id: str,
                      token_info: dict | None) -> bool:
        """Answer 403 PERMISSION_DENIED (audited) and return True unless the caller holds the operation's scopes."""
        denial = cls._denial(operation_id, token_info)
        if denial is None:
            return False
        AUTH_FAILURES.labels(code="PERMISSION_DENIED").inc()
        await run_in_threadpool(_audit_denial, operation_id, token_info or {}, scope)
        response = error_response(403, "PERMISSION_DENIED", denial[0], denial[1])
        await _send(response, scope, receive, send)
        return True

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


def _audit_denial(operation_id: str, token_info: dict, scope: Scope) -> None:
    # Denied requests are audited like changes (who tried what), in their own transaction.
    tenant_id = uuid.UUID(token_info["tenantId"]) if token_info.get("tenantId") else None
    actor = Actor(user_id=uuid.UUID(token_info["userId"]) if token_info.get("userId") else None,
                  role=token_info.get("role"), tenant_id=tenant_id,
                  request_id=(scope.get("state") or {}).get("request_id"), ip=(scope.get("client") or (None,))[0])
    with transaction() as session:
        audit.record(session, tenant_id=tenant_id, actor=actor, action="request.denied", resource_type="operation",
                     resource_id=operation_id, outcome="denied",
                     changes={"method": scope.get("method"), "path": scope.get("path"),
                              "tokenId": token_info.get("tokenId")})


async def _send(response, scope: Scope, receive: Receive, send: Send) -> None:
    await Response(
        content=response.body, status_code=response.status_code, media_type="application/json", headers=response.headers
    )(scope, receive, send)


REALM = "integration-hub"
HSTS = "max-age=31536000; includeSubDomains"


def no_store_operations(spec: dict[str, Any]) -> set[str]:
    """The operationIds whose success answer declares a `Cache-Control` header: they carry secrets.

    Declared in the contract (login, refresh, register, API token creation, secret rotations):
    the middleware below sends `Cache-Control: no-store` on them (RFC 6749 section 5.1).
    """
    found = set()
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            for status, response in (operation.get("responses") or {}).items():
                if str(status).startswith("2") and "Cache-Control" in (response.get("headers") or {}):
                    found.add(operation["operationId"])
    return found


class SecurityHeadersMiddleware:
    """Stamp the response headers every answer owes to its client's security, in one place.

    - `X-Content-Type-Options: nosniff` on every answer; `Strict-Transport-Security` in
      production (the hub is served over TLS there, behind its proxy).
    - `Cache-Control: no-store` on the operations whose answer carries a secret
      (`no_store_operations`, declared in the contract).
    - `WWW-Authenticate` on every 401 (RFC 6750 section 3): `Bearer realm="integration-hub"`,
      with `error="invalid_token"` when the request presented a token that was refused.

    Added outside Connexion's exception middleware, so error answers get the headers too.
    """

    def __init__(self, app: ASGIApp, *, production: bool) -> None:
        self.app = app
        self.production = production

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamp(message: Message) -> None:
            if message["type"] == "http.response.start":
                stamp_security_headers(MutableHeaders(scope=message), message["status"], scope,
                                       production=self.production)
            await send(message)

        await self.app(scope, receive, stamp)


def stamp_security_headers(headers: MutableHeaders, status: int, scope: Scope, *, production: bool) -> None:
    """Add `SecurityHeadersMiddleware`'s headers to an answer's `headers` (its status, its request's `scope`).

    Also called by the request-context middleware, which stamps them in its own single pass
    over the answer's headers (`server/request_log.py`).
    """
    headers["X-Content-Type-Options"] = "nosniff"
    if production:
        headers["Strict-Transport-Security"] = HSTS
    operation_id = (scope.get("state") or {}).get("operation_id")
    if operation_id in runtime.get().no_store_operations:
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    if status == 401 and "www-authenticate" not in headers:
        presented = ', error="invalid_token"' if _presented_token(scope) else ""
        headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"{presented}'


def _presented_token(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    if headers.get(b"authorization", b"").strip() or headers.get(b"x-api-key", b"").strip():
        return True
    cookies = headers.get(b"cookie", b"")
    return any(name.encode() + b"=" in cookies for name in (SESSION_COOKIE, REFRESH_COOKIE))
