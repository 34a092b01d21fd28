"""Tenant-scoped queries for users, plus the global email look-up that login needs."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import refresh_tokens
from persistence.errors import Conflict, NotFound
from persistence.models import User, utcnow
from persistence.pages import Page, contains, ordering, paginate
from persistence.passwords import hash_password

SORTABLE = {"name": User.name, "email": User.email, "createdAt": User.created_at}


def normalize_email(email: str) -> str:
    """Return the canonical form of an email address (trimmed, lower case)."""
    return email.strip().lower()


def create(
    session: Session,
    *,
    tenant_id: uuid.UUID | None,
    email: str,
    name: str,
    role: str,
    password: str,
) -> User:
    """Add a user with an argon2id password hash; raise Conflict if the email is taken anywhere."""
    email = normalize_email(email)
    if session.exec(select(User.id).where(User.email == email)).first() is not None:
        raise Conflict("A user with this email already exists", details={"field": "email"})
    user = User(tenant_id=tenant_id, email=email, name=name, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def find_by_email(session: Session, *, email: str) -> User | None:
    """Return the user with this email (any tenant, or a super admin), or None. Used by login."""
    return session.exec(select(User).where(User.email == normalize_email(email))).first()


def find_by_id(session: Session, *, user_id: uuid.UUID) -> User | None:
    """Return the user by id regardless of tenant, or None. Used only to authenticate a token."""
    return session.get(User, user_id)


def get(session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User:
    """Return the tenant's user, or raise NotFound(USER_NOT_FOUND), also for another tenant's user."""
    user = session.exec(select(User).where(User.tenant_id == tenant_id, User.id == user_id)).first()
    if user is None:
        raise NotFound("user", user_id, code="USER_NOT_FOUND")
    return user


def list_page(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    limit: int,
    offset: int,
    role: str | None = None,
    active: bool | None = None,
    search: str | None = None,
    sort_by: str = "createdAt",
    sort_order: str = "asc",
) -> Page[User]:
    """Return one page of the tenant's users, filtered by role/active and a name or email search."""
    stmt = select(User).where(User.tenant_id == tenant_id)
    if role:
        stmt = stmt.where(User.role == role)
    if active is not None:
        stmt = stmt.where(User.active == active)
    if search:
        stmt = stmt.where(sa.or_(contains(User.name, search), contains(User.email, search)))
    order = ordering(SORTABLE[sort_by], sort_order)
    return paginate(session, stmt, limit=limit, offset=offset, order_by=(order, User.id))


def update(session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID, changes: dict[str, Any]) -> User:
    """Apply `changes` (name, role, active) to the tenant's user and return it.

    Raises Conflict when the change would leave the tenant without an active tenant_admin.
    Deactivating a user revokes its refresh tokens, so it cannot mint new access tokens.
    """
    user = get(session, tenant_id=tenant_id, user_id=user_id)
    loses_admin = user.role == "tenant_admin" and user.active and (
        changes.get("role", "tenant_admin") != "tenant_admin" or changes.get("active", True) is False
    )
    if loses_admin:
        _ensure_another_active_admin(session, tenant_id=tenant_id, user_id=user_id)
    for key, value in changes.items():
        setattr(user, key, value)
    user.updated_at = utcnow()
    if changes.get("active") is False:
        refresh_tokens.revoke_user(session, user_id=user.id)
    session.add(user)
    session.flush()
    return user


def delete(session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User:
    """Delete the tenant's user and its refresh tokens; Conflict if it is the last active admin."""
    user = get(session, tenant_id=tenant_id, user_id=user_id)
    if user.role == "tenant_admin" and user.active:
        _ensure_another_active_admin(session, tenant_id=tenant_id, user_id=user_id)
    refresh_tokens.delete_user(session, user_id=user.id)
    session.delete(user)
    session.flush()
    return user


def record_login(session: Session, *, user: User, ip: str | None = None) -> None:
    """Stamp the user's last successful login: when, and from which client IP."""
    user.last_login_at = utcnow()
    user.last_login_ip = ip
    session.add(user)


def last_login_ip(session: Session, *, email: str) -> str | None:
    """Return the client IP of the last successful sign-in of the account with this email, or None."""
    return session.exec(select(User.last_login_ip).where(User.email == normalize_email(email))).first()


def super_admin_exists(session: Session) -> bool:
    """True when at least one super admin account exists (bootstrap creates the first one)."""
    return session.exec(select(User.id).where(User.role == "super_admin")).first() is not None


def _ensure_another_active_admin(session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    # Lock the tenant's admin rows (PostgreSQL) so two concurrent demotions cannot both pass.
    others = session.exec(
        select(User.id)
        .where(User.tenant_id == tenant_id, User.role == "tenant_admin", User.active == True, User.id != user_id)  # noqa: E712
        .with_for_update()
    ).first()
    if others is None:
        raise Conflict(
            "The tenant must keep at least one active tenant_admin",
            details={"reason": "last_active_tenant_admin"},
        )
