"""Operations of tag `records` (openapi/paths/records.yaml): an integration's records after a
cursor, and write-through to the provider. Tenant admins read and write every connection's
records; a plain user only those of their own connection."""

from __future__ import annotations

from uuid import UUID

from connectors import write_through
from handlers import keyset_cursor, views
from persistence import integrations, records
from persistence.db import transaction
from server import runtime
from server.errors import ApiError
from server.security import Caller


def list_records(id: str, token_info: dict, entity: str | None = None, cursor: str | None = None,
                 modifiedAfter: str | None = None, filter: list[str] | None = None, ids: list[str] | None = None,
                 userId: str | None = None, limit: int = 100) -> dict:
    """Return one page of the integration's records in modification order, after `cursor`."""
    caller = Caller.from_token(token_info)
    after = views.decode_record_cursor(cursor)
    with transaction() as session:
        integrations.get(session, tenant_id=caller.tenant_id, integration_id=UUID(id))
        rows, has_more = records.list_after(
            session, tenant_id=caller.tenant_id, integration_id=UUID(id), owner_keys=_owner_keys(caller, userId),
            entity=entity, after_seq=after, modified_after=keyset_cursor.instant(modifiedAfter, "modifiedAfter"),
            actions=filter, external_ids=ids, limit=limit)
    return views.record_page(rows, has_more=has_more, after=after)


def get_record(id: str, recordId: str, token_info: dict) -> dict:
    """Return one record (404 for another tenant's, another integration's or, for a user, another user's)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        integrations.get(session, tenant_id=caller.tenant_id, integration_id=UUID(id))
        return records.record_view(records.get(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                               record_id=UUID(recordId), owner_keys=_owner_keys(caller)))


def create_record(id: str, body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Create the record at the provider first, then store what it answered."""
    caller = Caller.from_token(token_info)
    row = write_through.create(_flows(), actor=caller.actor, integration_id=UUID(id), user_id=_writer(caller, id),
                               entity=body["entity"], data=body["data"])
    return records.record_view(row), 201, {"Location": f"/api/v1/tenant/integrations/{id}/records/{row.id}"}


def update_record(id: str, recordId: str, body: dict, token_info: dict) -> dict:
    """Change the record at the provider unless its copy moved past the client's base (409), then store it."""
    caller = Caller.from_token(token_info)
    base = keyset_cursor.instant(body["lastModifiedAt"], "lastModifiedAt")
    row = write_through.update(_flows(), actor=caller.actor, integration_id=UUID(id), record_id=UUID(recordId),
                               owner_keys=_owner_keys(caller), data=body["data"], base=base)
    return records.record_view(row)


def delete_record(id: str, recordId: str, token_info: dict) -> dict:
    """Delete the record at the provider, then keep its tombstone."""
    caller = Caller.from_token(token_info)
    row = write_through.delete(_flows(), actor=caller.actor, integration_id=UUID(id), record_id=UUID(recordId),
                               owner_keys=_owner_keys(caller))
    return records.record_view(row)


def _owner_keys(caller: Caller, user_id: str | None = None) -> list[str] | None:
    """Whose connections' records the caller may touch: None (every owner) or a list of owner keys.

    A caller who may read the tenant's integrations (`integrations:read`: tenant admins and
    their tokens) reaches every connection's records, or only `user_id`'s when given; anyone
    else only their own user connection's, and naming another user is refused (403).
    """
    if "integrations:read" in caller.scopes:
        return [str(UUID(user_id))] if user_id else None
    if user_id and UUID(user_id) != caller.user_id:
        raise ApiError(403, "PERMISSION_DENIED", "Only a tenant admin reads another user's records",
                       details={"field": "userId"})
    return [str(caller.user_id)]


def _writer(caller: Caller, integration_id: str) -> UUID | None:
    """The connection a new record is written through: the caller's own on a user-scoped integration,
    the tenant's otherwise (a plain user holds no tenant connection: refused as not connected)."""
    with transaction() as session:
        integration = integrations.get(session, tenant_id=caller.tenant_id, integration_id=UUID(integration_id))
    return caller.user_id if integration.user_scoped or "integrations:read" not in caller.scopes else None


def _flows():
    return runtime.get().flows(present_connection=views.connection)
