"""Refresh-token rows: issue, rotate with reuse detection, revoke.

RFC 9700 section 4.14.2: a refresh token is single-use; presenting a used one means it leaked,
so every token of its family (one login) is revoked.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence.models import RefreshToken, as_utc, utcnow


class RefreshRejected(Exception):
    """The presented refresh token cannot be used; `reason` is unknown|expired|revoked|reused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def issue(
    session: Session,
    *,
    user_id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    ttl: timedelta,
    family_id: uuid.UUID | None = None,
) -> RefreshToken:
    """Add a new refresh-token row (a new family unless `family_id` is given) and return it."""
    now = utcnow()
    row = RefreshToken(
        id=uuid.uuid4(),
        family_id=family_id or uuid.uuid4(),
        user_id=user_id,
        tenant_id=tenant_id,
        issued_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    session.flush()
    return row


def consume(session: Session, *, token_id: uuid.UUID, user_id: uuid.UUID) -> RefreshToken:
    """Mark the token used and return it, so the caller can issue its successor in the family.

    Raises RefreshRejected: `unknown`, `revoked`, `expired`, or `reused` (the family is then
    revoked in this same transaction; the caller must commit that revocation).
    The row is locked (PostgreSQL) so two concurrent refreshes cannot both succeed.
    """
    row = session.exec(
        select(RefreshToken).where(RefreshToken.id == token_id, RefreshToken.user_id == user_id).with_for_update()
    ).first()
    if row is None:
        raise RefreshRejected("unknown")
    if row.revoked_at is not None:
        raise RefreshRejected("revoked")
    if row.used_at is not None:
        revoke_family(session, family_id=row.family_id)
        raise RefreshRejected("reused")
    if as_utc(row.expires_at) <= utcnow():
        raise RefreshRejected("expired")
    row.used_at = utcnow()
    session.add(row)
    return row


def revoke(session: Session, *, token_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Revoke the token's whole family (logout); return False if the token is not the user's."""
    row = session.exec(
        select(RefreshToken).where(RefreshToken.id == token_id, RefreshToken.user_id == user_id)
    ).first()
    if row is None:
        return False
    revoke_family(session, family_id=row.family_id)
    return True


def revoke_family(session: Session, *, family_id: uuid.UUID) -> None:
    """Revoke every not-yet-revoked token of the family."""
    session.exec(
        sa.update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_user(session: Session, *, user_id: uuid.UUID) -> None:
    """Revoke every refresh token of the user (deactivation)."""
    session.exec(
        sa.update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def delete_user(session: Session, *, user_id: uuid.UUID) -> None:
    """Delete every refresh-token row of the user (the user is being deleted)."""
    session.exec(sa.delete(RefreshToken).where(RefreshToken.user_id == user_id))

