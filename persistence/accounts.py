"""Sign-up and sign-in rules over tenants and users (no tokens here: those are the HTTP edge's)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import tenants, users
from persistence.models import RefreshToken, Tenant, User
from persistence.passwords import verify_password


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in check: the user, or why it was refused.

    `failure` is None on success, else `invalid_credentials`, `tenant_suspended` or
    `tenant_offboarded`.
    """

    user: User | None
    tenant: Tenant | None
    failure: str | None


def register_tenant(session: Session, *, email: str, password: str, name: str, tenant_name: str) -> tuple[Tenant, User]:
    """Create a tenant on the free plan and its first tenant_admin; Conflict if the email is taken."""
    tenant = tenants.create(session, name=tenant_name, plan="free")
    user = users.create(session, tenant_id=tenant.id, email=email, name=name, role="tenant_admin", password=password)
    return tenant, user


def check_password(session: Session, *, email: str, password: str) -> SignIn:
    """Check an email and password the way login needs.

    An unknown email still costs one argon2 verification, so a wrong email and a wrong password
    take similar time and answer the same `invalid_credentials`. A deactivated user is refused
    the same way.
    """
    user = users.find_by_email(session, email=email)
    if not verify_password(user.password_hash if user else None, password) or user is None or not user.active:
        return SignIn(user=None, tenant=None, failure="invalid_credentials")
    return check_standing(session, user=user)


def check_user(session: Session, *, user_id: uuid.UUID) -> SignIn:
    """Check that a user (from a refresh token) still exists, is active and has an active tenant."""
    user = users.find_by_id(session, user_id=user_id)
    if user is None or not user.active:
        return SignIn(user=None, tenant=None, failure="invalid_credentials")
    return check_standing(session, user=user)


def check_session(session: Session, *, user_id: uuid.UUID, family_id: uuid.UUID) -> SignIn:
    """Check an access token's user, tenant and login (refresh-token family) in one query.

    Refused as `invalid_credentials` when the user is gone or inactive, or when the login was
    revoked (logout, or reuse of a rotated refresh token revoked its family), so an access
    token stops working at once rather than when it expires. Tenant standing as `check_standing`.
    """
    revoked = sa.exists().where(RefreshToken.family_id == family_id, RefreshToken.user_id == user_id,
                                RefreshToken.revoked_at.is_not(None))
    row = session.exec(select(User, Tenant, revoked.label("revoked"))
                       .outerjoin(Tenant, Tenant.id == User.tenant_id).where(User.id == user_id)).first()
    if row is None or not row[0].active or row[2]:
        return SignIn(user=None, tenant=None, failure="invalid_credentials")
    user, tenant, _ = row
    if tenant is not None and tenant.status != "active":
        return SignIn(user=user, tenant=tenant, failure=f"tenant_{tenant.status}")
    return SignIn(user=user, tenant=tenant, failure=None)


def check_standing(session: Session, *, user: User) -> SignIn:
    """Refuse a user whose tenant is suspended or offboarded; super admins have no tenant."""
    tenant = tenants.get(session, tenant_id=user.tenant_id) if user.tenant_id else None
    if tenant is not None and tenant.status != "active":
        return SignIn(user=user, tenant=tenant, failure=f"tenant_{tenant.status}")
    return SignIn(user=user, tenant=tenant, failure=None)


def create_tenant(session: Session, *, name: str, plan: str, admin: dict | None = None) -> Tenant:
    """Create a tenant (super admin), with its first tenant_admin when `admin` {email, name, password} is given."""
    tenant = tenants.create(session, name=name, plan=plan)
    if admin:
        users.create(session, tenant_id=tenant.id, email=admin["email"], name=admin["name"], role="tenant_admin",
                     password=admin["password"])
    return tenant
