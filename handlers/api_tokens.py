"""Operations of tag `api-tokens` (openapi/paths/api-tokens.yaml). Tenant admin."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from handlers import views
from persistence import api_tokens, events
from persistence.db import transaction
from persistence.models import as_utc, utcnow
from server.errors import ApiError
from server.security import Caller

BASE = "/api/v1/tenant/api-tokens"


def list_api_tokens(token_info: dict, limit: int = 50, offset: int = 0, includeRevoked: bool = False) -> dict:
    """Return one page of the tenant's tokens, newest first (never their secrets)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        result = api_tokens.list_page(session, tenant_id=caller.tenant_id, limit=limit, offset=offset,
                                      include_revoked=includeRevoked)
        return views.page("tokens", result, views.api_token)


def create_api_token(body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Create a token limited to a subset of the caller's scopes; its secret is in this answer only."""
    caller = Caller.from_token(token_info)
    outside = sorted(set(body["scopes"]) - set(caller.scopes))
    if outside:
        raise ApiError(400, "VALIDATION_ERROR", f"A token cannot hold scopes its creator lacks: {', '.join(outside)}",
                       details={"field": "scopes", "notGranted": outside})
    expires_at = _future(body.get("expiresAt"))
    with transaction() as session:
        row, secret = api_tokens.create(session, tenant_id=caller.tenant_id, created_by=caller.user_id,
                                        name=body["name"], scopes=body["scopes"], expires_at=expires_at)
        view = views.api_token(row)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="api_token.create",
                             resource_type="api_token", resource_id=row.id, event_type="api_token.created", data=view,
                             changes={"name": row.name, "scopes": row.scopes, "prefix": row.prefix})
        return {**view, "token": secret}, 201, {"Location": f"{BASE}/{row.id}"}


def revoke_api_token(tokenId: str, token_info: dict) -> tuple[None, int]:
    """Revoke a token of the caller's tenant."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = api_tokens.revoke(session, tenant_id=caller.tenant_id, token_id=UUID(tokenId))
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="api_token.revoke",
                             resource_type="api_token", resource_id=row.id, event_type="api_token.revoked",
                             data=views.api_token(row))
    return None, 204


def _future(value: str | None) -> datetime | None:
    if value is None:
        return None
    when = as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    if when is None or when.tzinfo is None or when <= utcnow():
        raise ApiError(400, "VALIDATION_ERROR", "expiresAt must be a future RFC 3339 date-time with a timezone",
                       details={"field": "expiresAt"})
    return when
