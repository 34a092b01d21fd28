"""Tenant-scoped queries for API tokens. Only a token's SHA-256 is stored; the token is shown once.

Seeds: backend integration guide ("admin tokens"), integration runbook (API keys).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

from sqlmodel import Session, select

from persistence.errors import NotFound
from persistence.models import ApiToken, as_utc, utcnow
from persistence.pages import Page, paginate

TOKEN_PREFIX = "hub_"
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write lastUsedAt at most this often per token


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_api_token(value: str) -> bool:
    """True when `value` has the shape of a hub API token (`hub_<prefix>_<secret>`)."""
    return value.startswith(TOKEN_PREFIX) and value.count("_") >= 2


def create(session: Session, *, tenant_id: uuid.UUID, created_by: uuid.UUID, name: str, scopes: list[str],
           expires_at: datetime | None) -> tuple[ApiToken, str]:
    """Create a token and return (row, the token string: shown once, never stored)."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    row = ApiToken(tenant_id=tenant_id, created_by=created_by, name=name, prefix=f"{TOKEN_PREFIX}{prefix}",
                   secret_hash=_hash(secret), scopes=sorted(set(scopes)), expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, f"{TOKEN_PREFIX}{prefix}_{secret}"


def authenticate(session: Session, *, token: str) -> ApiToken | None:
    """Return the live token matching `token` (not revoked, not expired), stamping lastUsedAt; else None."""
    try:
        _, prefix, secret = token.split("_", 2)
    except ValueError:
        return None
    row = session.exec(select(ApiToken).where(ApiToken.prefix == f"{TOKEN_PREFIX}{prefix}")).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and as_utc(row.expires_at) <= now):
        return None
    if row.last_used_at is None or now - as_utc(row.last_used_at) >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
    return row


def list_page(session: Session, *, tenant_id: uuid.UUID, limit: int, offset: int,
              include_revoked: bool = False) -> Page[ApiToken]:
    """Return one page of the tenant's tokens, newest first."""
    stmt = select(ApiToken).where(ApiToken.tenant_id == tenant_id)
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return paginate(session, stmt, limit=limit, offset=offset, order_by=(ApiToken.created_at.desc(), ApiToken.id))


def revoke(session: Session, *, tenant_id: uuid.UUID, token_id: uuid.UUID) -> ApiToken:
    """Revoke the tenant's token (idempotent); NotFound(API_TOKEN_NOT_FOUND) for another tenant's."""
    row = session.exec(select(ApiToken).where(ApiToken.tenant_id == tenant_id, ApiToken.id == token_id)).first()
    if row is None:
        raise NotFound("API token", token_id, code="API_TOKEN_NOT_FOUND")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
    return row
