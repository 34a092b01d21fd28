"""Operations of tag `users` (openapi/paths/users.yaml). Tenant admin, own tenant only."""

from __future__ import annotations

from uuid import UUID

from handlers import views
from persistence import events, users
from persistence.db import transaction
from server.security import Caller

BASE = "/api/v1/tenant/users"


def list_users(token_info: dict, limit: int = 50, offset: int = 0, role: str | None = None,
               active: bool | None = None, search: str | None = None, sortBy: str = "createdAt",
               sortOrder: str = "asc") -> dict:
    """Return one page of the caller's tenant's users."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        result = users.list_page(session, tenant_id=caller.tenant_id, limit=limit, offset=offset, role=role,
                                 active=active, search=search, sort_by=sortBy, sort_order=sortOrder)
        return views.page("users", result, views.user)


def create_user(body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Add a user to the caller's tenant."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        user = users.create(session, tenant_id=caller.tenant_id, email=body["email"], name=body["name"],
                            role=body["role"], password=body["password"])
        view = views.user(user)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="user.create",
                             resource_type="user", resource_id=user.id, changes=body, event_type="user.created",
                             data=view)
        return view, 201, {"Location": f"{BASE}/{user.id}"}


def get_user(userId: str, token_info: dict) -> dict:
    """Return one user of the caller's tenant."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        return views.user(users.get(session, tenant_id=caller.tenant_id, user_id=UUID(userId)))


def update_user(userId: str, body: dict, token_info: dict) -> dict:
    """Rename, re-role, deactivate or reactivate a user of the caller's tenant."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        user = users.update(session, tenant_id=caller.tenant_id, user_id=UUID(userId), changes=body)
        view = views.user(user)
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="user.update",
                             resource_type="user", resource_id=user.id, changes=body, event_type="user.updated",
                             data=view)
        return view


def delete_user(userId: str, token_info: dict) -> tuple[None, int]:
    """Delete a user of the caller's tenant."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        user = users.delete(session, tenant_id=caller.tenant_id, user_id=UUID(userId))
        # The deleted row keeps its loaded values: the view as GET answered it before the deletion.
        events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action="user.delete",
                             resource_type="user", resource_id=user.id, event_type="user.deleted",
                             data=views.user(user))
    return None, 204
