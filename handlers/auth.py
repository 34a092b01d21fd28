"""Operations of tag `auth` (openapi/paths/auth.yaml). Seeds: integration runbook section 3,
backend integration guide "Authentication Flow"."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlmodel import Session
from starlette.responses import Response

from server import ratelimit, runtime

from handlers import views
from persistence import accounts, audit, refresh_tokens, tenants, users
from persistence.db import transaction
from persistence.models import User
from persistence.refresh_tokens import RefreshRejected
from server.errors import ApiError
from server.pipeline import local_read
from server.security import (INVALID_CREDENTIALS, INVALID_TOKEN, Caller, cookie_refresh_token, refuse_standing,
                             request_actor, session_cookies)
from server.tokens import decode, mint_access, mint_refresh


def register(body: dict) -> tuple[dict, int]:
    """Create a tenant on the free plan with its first tenant_admin, and sign that admin in."""
    ratelimit.enforce_register(users.normalize_email(body["email"]), request_actor().ip)
    with transaction() as session:
        tenant, user = accounts.register_tenant(
            session, email=body["email"], password=body["password"], name=body["name"], tenant_name=body["tenantName"]
        )
        audit.record(session, tenant_id=tenant.id, actor=request_actor(user), action="tenant.register", resource_type="tenant",
                     resource_id=tenant.id, changes={"tenantName": tenant.name, "email": user.email})
        return _sign_in(session, user), 201


def login(body: dict) -> dict | Response:
    """Exchange email and password for tokens; every attempt, failed or not, is audited.

    Throttled per IP, per (email, IP) and per email (failures only, 15 minutes); the per-email
    limit never refuses the IP the account last signed in from: see server/ratelimit.py.
    """
    email, ip = users.normalize_email(body["email"]), request_actor().ip
    ratelimit.enforce_login(email, ip, last_login_ip=lambda: _last_login_ip(email))
    with transaction() as session:
        result = accounts.check_password(session, email=body["email"], password=body["password"])
        user = result.user
        audit.record(session, tenant_id=user.tenant_id if user else None, actor=request_actor(user),
                     action="auth.login", resource_type="user", resource_id=user.id if user else None,
                     changes={"email": email, "failure": result.failure},
                     outcome="failure" if result.failure else "success")
        tokens = None
        if result.failure == "invalid_credentials":
            ratelimit.count_login_failure(email, ip)
        if not result.failure:
            users.record_login(session, user=user, ip=ip)
            tokens = _sign_in(session, user)
    refuse_standing(result.failure, invalid=INVALID_CREDENTIALS)
    if body.get("cookie", runtime.get().settings.session_cookies):
        return session_cookies(tokens)
    return tokens


def _last_login_ip(email: str) -> str | None:
    with transaction() as session:
        return users.last_login_ip(session, email=email)


def refresh(body: dict | None = None) -> dict | Response:
    """Rotate a refresh token; a reused one revokes its whole family (RFC 9700 section 4.14.2).

    The token comes from the body, else from a cookie session's `hub_refresh` cookie (which
    then needs `X-Requested-With`); a cookie session's cookies are rotated with it.
    """
    given = (body or {}).get("refreshToken")
    from_cookie = cookie_refresh_token(given)
    if not (given or from_cookie):
        raise ApiError(400, "VALIDATION_ERROR", "refreshToken is required (in the body, or the hub_refresh cookie)",
                       details={"field": "refreshToken"})
    claims = decode(runtime.get().tokens, given or from_cookie, typ="refresh")
    user_id = uuid.UUID(claims["sub"])
    rejected, tokens = None, None
    with transaction() as session:
        try:
            row = refresh_tokens.consume(session, token_id=uuid.UUID(claims["jti"]), user_id=user_id)
        except RefreshRejected as exc:
            rejected = exc.reason  # commit below: a reuse has just revoked the family
        else:
            standing = accounts.check_user(session, user_id=user_id)
            refuse_standing(standing.failure, invalid=INVALID_TOKEN)
            tokens = _sign_in(session, standing.user, family_id=row.family_id)
    if rejected:
        raise ApiError(401, "INVALID_TOKEN", f"Refresh token is {rejected}" if rejected != "unknown" else "Token is invalid")
    return session_cookies(tokens) if from_cookie else tokens


def logout(token_info: dict, body: dict | None = None) -> Response:
    """Revoke the caller's refresh token and its family; another user's token is left alone.

    The token comes from the body, else from the `hub_refresh` cookie. Clears a cookie session's cookies.
    """
    caller = Caller.from_token(token_info)
    given = (body or {}).get("refreshToken")
    token = given or cookie_refresh_token(given)
    if not token:
        raise ApiError(400, "VALIDATION_ERROR", "refreshToken is required (in the body, or the hub_refresh cookie)",
                       details={"field": "refreshToken"})
    try:
        claims = decode(runtime.get().tokens, token, typ="refresh")
    except ApiError:
        raise ApiError(400, "VALIDATION_ERROR", "refreshToken is not a valid refresh token",
                       details={"field": "refreshToken"}) from None
    with transaction() as session:
        if refresh_tokens.revoke(session, token_id=uuid.UUID(claims["jti"]), user_id=caller.user_id):
            audit.record(session, tenant_id=caller.tenant_id, actor=caller.actor, action="auth.logout",
                         resource_type="user", resource_id=caller.user_id)
    return session_cookies(None, status=204)


@local_read
def get_me(token_info: dict) -> dict:
    """Return the caller, its tenant and the scopes its role grants."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        user = users.find_by_id(session, user_id=caller.user_id)
        tenant = tenants.get(session, tenant_id=user.tenant_id) if user.tenant_id else None
        return views.me(user, tenant, list(caller.scopes))


def _sign_in(session: Session, user: User, family_id: uuid.UUID | None = None) -> dict:
    config = runtime.get().tokens
    row = refresh_tokens.issue(session, user_id=user.id, tenant_id=user.tenant_id,
                               ttl=timedelta(seconds=config.refresh_ttl), family_id=family_id)
    return {
        "accessToken": mint_access(config, user_id=user.id, tenant_id=user.tenant_id, role=user.role,
                                   family_id=row.family_id),
        "refreshToken": mint_refresh(config, user_id=user.id, token_id=row.id, family_id=row.family_id),
        "tokenType": "Bearer",
        "expiresIn": config.access_ttl,
        "refreshExpiresIn": config.refresh_ttl,
        "user": views.auth_user(user),
    }

