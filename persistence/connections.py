"""Tenant-scoped queries for connections and their sealed credentials. No HTTP; never commits.

Seed: integration API implementation, "Connection Management Endpoints" and "User-Scoped
Connection Endpoints". Secrets are sealed by `persistence.vault`, bound to the tenant and the
connection, so a ciphertext copied onto another row does not open.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import integrations, vault
from persistence.errors import NotFound
from persistence.models import Connection, Integration, as_utc, utcnow


def owner_key(user_id: uuid.UUID | None) -> str:
    """The uniqueness key of a connection's owner: `tenant`, or the user's id."""
    return "tenant" if user_id is None else str(user_id)


def binding(connection: Connection) -> str:
    """The vault binding (AES-GCM associated data) of a connection's secret."""
    return f"connection:{connection.tenant_id}:{connection.id}"


def secret_name(connection: Connection) -> str | None:
    """The stored secret's name (never its value), versioned so a replacement gets a new name."""
    return f"connections/{connection.id}/v{connection.secret_version}" if connection.secret else None


def find(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
         user_id: uuid.UUID | None = None, lock: bool = False) -> Connection | None:
    """Return the tenant's (or the user's) connection of the integration, or None.

    `lock` takes a row lock (SELECT ... FOR UPDATE on PostgreSQL) so one refresh runs at a time.
    """
    stmt = select(Connection).where(
        Connection.tenant_id == tenant_id,
        Connection.integration_id == integration_id,
        Connection.owner_key == owner_key(user_id),
    )
    return session.exec(stmt.with_for_update() if lock else stmt).first()


def get(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
        user_id: uuid.UUID | None = None) -> Connection:
    """Return the connection, or NotFound(CONNECTION_NOT_FOUND)."""
    row = find(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
    if row is None:
        raise NotFound("connection of integration", integration_id, code="CONNECTION_NOT_FOUND")
    return row


def store(
    session: Session,
    *,
    integration: Integration,
    user_id: uuid.UUID | None,
    auth_type: str,
    credentials: dict[str, Any],
    display_name: str | None = None,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> Connection:
    """Create or replace the owner's connection with freshly sealed `credentials`; mark it active.

    A tenant connection also marks its integration `connected` (unless it is disabled).
    """
    row = find(session, tenant_id=integration.tenant_id, integration_id=integration.id, user_id=user_id, lock=True)
    now = utcnow()
    if row is None:
        row = Connection(tenant_id=integration.tenant_id, integration_id=integration.id, user_id=user_id,
                         owner_key=owner_key(user_id), auth_type=auth_type)
    row.auth_type = auth_type
    row.status = "active"
    row.display_name = display_name if display_name is not None else row.display_name
    row.scopes = list(scopes or [])
    row.connected_at = now
    row.expires_at = expires_at
    row.validation_error = None
    row.disconnected_at = None
    row.secret_version += 1
    row.secret = vault.seal(credentials, binding=binding(row))
    row.updated_at = now
    session.add(row)
    session.flush()
    if user_id is None and integration.status != "disabled":
        integrations.set_status(session, integration, "connected")
    return row


def record_failed_authorization(session: Session, *, integration: Integration, user_id: uuid.UUID | None,
                                error: str) -> Connection:
    """Mark the owner's OAuth connection `error` after a refused authorization (creating the row if new).

    An existing connection keeps its credentials: a denied re-authorization does not destroy them.
    """
    row = find(session, tenant_id=integration.tenant_id, integration_id=integration.id, user_id=user_id)
    if row is None:
        row = Connection(tenant_id=integration.tenant_id, integration_id=integration.id, user_id=user_id,
                         owner_key=owner_key(user_id), auth_type="oauth2")
        session.add(row)
        session.flush()
    return mark(session, connection=row, status="error", error=error)


def replace_tokens(session: Session, *, connection: Connection, credentials: dict[str, Any],
                   expires_at: datetime | None) -> Connection:
    """Re-seal rotated OAuth tokens on the (locked) connection, in the caller's transaction."""
    connection.secret = vault.seal(credentials, binding=binding(connection))
    connection.expires_at = expires_at
    connection.updated_at = utcnow()
    session.add(connection)
    session.flush()
    return connection


def credentials(connection: Connection) -> dict[str, Any]:
    """Open the connection's credentials; VaultError when they do not open for this row."""
    if not connection.secret:
        return {}
    return vault.open_sealed(connection.secret, binding=binding(connection))


def mark(session: Session, *, connection: Connection, status: str, error: str | None) -> Connection:
    """Set a connection's status (expired / error / active) and its validation error.

    A tenant connection that fails puts its integration in `error` with the same message.
    """
    connection.status = status
    connection.validation_error = error
    connection.updated_at = utcnow()
    session.add(connection)
    if connection.owner_key == "tenant":
        integration = session.get(Integration, connection.integration_id)
        if integration is not None and integration.status != "disabled":
            integrations.set_status(session, integration, "error" if status in ("error", "expired") else "connected",
                                    error=error)
    session.flush()
    return connection


def record_test(session: Session, *, connection: Connection, success: bool, error: str | None,
                tested_at: datetime, response_time_ms: float | None) -> Connection:
    """Record a connection test's outcome (lastValidatedAt, validationError, response time)."""
    connection.last_validated_at = tested_at
    connection.last_response_time_ms = response_time_ms
    connection.validation_error = None if success else error
    connection.updated_at = utcnow()
    session.add(connection)
    session.flush()
    return connection


def disconnect(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
               user_id: uuid.UUID | None = None) -> Connection:
    """Destroy the connection's secret and mark it revoked; a tenant's integration goes back to pending."""
    row = get(session, tenant_id=tenant_id, integration_id=integration_id, user_id=user_id)
    now = utcnow()
    row.status, row.secret, row.expires_at, row.disconnected_at, row.updated_at = "revoked", None, None, now, now
    session.add(row)
    if user_id is None:
        integration = session.get(Integration, integration_id)
        if integration is not None and integration.status != "disabled":
            integrations.set_status(session, integration, "pending")
    session.flush()
    return row


def sealed_ids(session: Session, *, after: uuid.UUID | None, batch: int) -> list[uuid.UUID]:
    """Ids of connections holding a secret, in id order after `after` (key rotation walks them)."""
    stmt = select(Connection.id).where(Connection.secret.is_not(None)).order_by(Connection.id).limit(batch)
    if after is not None:
        stmt = stmt.where(Connection.id > after)
    return list(session.exec(stmt).all())


def reseal(session: Session, *, connection_id: uuid.UUID) -> bool:
    """Re-seal one connection's secret under the newest key (row locked); True if it changed."""
    row = session.exec(select(Connection).where(Connection.id == connection_id).with_for_update()).first()
    if row is None or not row.secret or not vault.needs_rotation(row.secret):
        return False
    row.secret = vault.seal(vault.open_sealed(row.secret, binding=binding(row)), binding=binding(row))
    session.add(row)
    return True


def count_with_secret(session: Session) -> int:
    """How many connections hold a sealed secret."""
    return int(session.scalar(sa.select(sa.func.count()).select_from(Connection).where(Connection.secret.is_not(None))) or 0)


def health_rows(session: Session, *, tenant_id: uuid.UUID | None) -> list[tuple[Integration, Connection | None, str]]:
    """Every integration (of the tenant, or of all tenants when None) with its tenant connection and provider key."""
    from persistence.models import Provider

    stmt = (
        select(Integration, Connection, Provider.provider)
        .join(Provider, Provider.id == Integration.provider_id)
        .outerjoin(Connection, sa.and_(Connection.integration_id == Integration.id, Connection.owner_key == "tenant"))
        .order_by(Integration.tenant_id, Integration.name)
    )
    if tenant_id is not None:
        stmt = stmt.where(Integration.tenant_id == tenant_id)
    return list(session.exec(stmt).all())


# --- Used by background work (sync runs), which cannot reach the handlers' views -------------


def view(row: Connection) -> dict[str, Any]:
    """Connection as the API shows it (`handlers.views.connection` answers this): never the secret."""
    def stamp(value: datetime | None) -> str | None:
        return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None

    return {
        "connectionId": str(row.id),
        "integrationId": str(row.integration_id),
        "status": row.status,
        "authType": row.auth_type,
        "displayName": row.display_name,
        "scopes": row.scopes or [],
        "connectedAt": stamp(row.connected_at),
        "lastValidatedAt": stamp(row.last_validated_at),
        "validationError": row.validation_error,
        "expiresAt": stamp(row.expires_at),
        "credentialSecretName": secret_name(row),
    }
