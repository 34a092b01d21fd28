"""Operations of tag `records` (openapi/paths/records.yaml): an integration's records after a
cursor, and write-through to the provider. Tenant admins read and write every connection's
records; a plain user only those of their own connection (persistence.records.reader_owner_keys)."""

from __future__ import annotations

from uuid import UUID

from connectors import write_through
from handlers import keyset_cursor, views
from persistence import integrations, records
from persistence.db import transaction
from server import runtime
from server.security import Caller


def list_records(id: str, token_info: dict, entity: str | None = None, cursor: str | None = None,
                 modifiedAfter: str | None = None, filter: list[str] | None = None, ids: list[str] | None = None,
                 userId: str | None = None, limit: int = 100) -> dict:
    """Return one page of the integration's records in modification order, after `cursor`."""
    caller = Caller.from_token(token_info)
    after = views.decode_record_cursor(cursor)
    with transaction() as session:
        owner_keys = _owner_keys(session, caller, id, userId)
        rows, has_more = records.list_after(
            session, tenant_id=caller.tenant_id, integration_id=UUID(id), owner_keys=owner_keys, entity=entity,
            after_seq=after, modified_after=keyset_cursor.instant(modifiedAfter, "modifiedAfter"), actions=filter,
            external_ids=ids, limit=limit)
    return views.record_page(rows, has_more=has_more, after=after)


def get_record(id: str, recordId: str, token_info: dict) -> dict:
    """Return one record (404 for another tenant's, another integration's or, for a user, another user's)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        owner_keys = _owner_keys(session, caller, id)
        return records.record_view(records.get(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                               record_id=UUID(recordId), owner_keys=owner_keys))


def create_record(id: str, body: dict, token_info: dict) -> tuple[dict, int, dict]:
    """Create the record at the provider first, then store what it answered."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        owner_keys = _owner_keys(session, caller, id)
    # A tenant admin writes through the tenant connection, a user through their own.
    user_id = None if owner_keys is None or owner_keys == ["tenant"] else caller.user_id
    row = write_through.create(_flows(), actor=caller.actor, integration_id=UUID(id), user_id=user_id,
                               entity=body["entity"], data=body["data"])
    return records.record_view(row), 201, {"Location": f"/api/v1/tenant/integrations/{id}/records/{row.id}"}


def update_record(id: str, recordId: str, body: dict, token_info: dict) -> dict:
    """Change the record at the provider unless its copy moved past the client's base (409), then store it."""
    caller = Caller.from_token(token_info)
    base = keyset_cursor.instant(body["lastModifiedAt"], "lastModifiedAt")
    with transaction() as session:
        owner_keys = _owner_keys(session, caller, id)
    row = write_through.update(_flows(), actor=caller.actor, integration_id=UUID(id), record_id=UUID(recordId),
                               owner_keys=owner_keys, data=body["data"], base=base)
    return records.record_view(row)


def delete_record(id: str, recordId: str, token_info: dict) -> dict:
    """Delete the record at the provider, then keep its tombstone."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        owner_keys = _owner_keys(session, caller, id)
    row = write_through.delete(_flows(), actor=caller.actor, integration_id=UUID(id), record_id=UUID(recordId),
                               owner_keys=owner_keys)
    return records.record_view(row)


def _owner_keys(session, caller: Caller, integration_id: str, user_id: str | None = None) -> list[str] | None:
    """Whose connections' records the caller reaches: `persistence.records.reader_owner_keys` (404 for an
    integration that is not the caller's tenant's, or a tenant-level one for a plain user)."""
    integration = integrations.get(session, tenant_id=caller.tenant_id, integration_id=UUID(integration_id))
    return records.reader_owner_keys(integration, role=caller.role, user_id=caller.user_id,
                                     requested_user_id=UUID(user_id) if user_id else None)


def _flows():
    return runtime.get().flows(present_connection=views.connection)
