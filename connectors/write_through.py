"""Write-through: create, change and delete a record at the provider first, then store what it answered.

The entity's sync definition declares the requests (`write.create|update|delete`: method, path
with `{id}`, optional `bodyKey` envelope; contract `EntitySyncDefinition`). Each operation calls
the provider through `connectors.provider_api` (credentials, SSRF guard, size cap, timeout)
outside any transaction, then stores the provider's copy with `persistence.records.upsert` and
records the change with ONE `persistence.events.record_change` (audit + `records.changed`,
trigger `write`) in one short transaction.

Last-write-wins made explicit (integrations document, "Data Synchronization"): an update names
the `metadata.lastModifiedAt` of the copy it was built on. Before writing, the provider's current
copy is read (GET on the update path); when the hub's copy changed after that base, or the
provider's copy is newer than the hub's (by `updatedAtField`, else by content), the update is
refused with RecordConflict carrying both versions, and nothing is written anywhere. (A change
between that read and the write is not caught: the providers of the catalog offer no common
precondition header.)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from connectors import provider_api
from connectors.connection_flows import FlowContext
from connectors.sync_definitions import DefinitionMismatch, item_id, parse_updated_at
from persistence import audit, events, integrations, records, sync_definitions
from persistence.db import transaction
from persistence.errors import Conflict, InvalidInput
from persistence.models import Provider, Record, as_utc, utcnow

TRIGGER = "write"
# The API shows instants to the microsecond; a base is compared at that precision.
_PRECISION = timedelta(microseconds=1)


class RecordConflict(Conflict):
    """The provider's copy changed after the client's base: `details.current` (provider) and `details.yours`."""


@dataclass(frozen=True)
class _Target:
    integration_id: uuid.UUID
    user_id: uuid.UUID | None
    owner_key: str
    definition: sync_definitions.SyncDefinition


def create(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, user_id: uuid.UUID | None,
           entity: str, data: dict[str, Any]) -> Record:
    """Create `data` as a new `entity` item at the provider (through `user_id`'s connection, None: the
    tenant's), then store and return the provider's copy.

    Raises NotFound (integration), InvalidInput (entity unknown or without `write.create`; an
    answer without the entity's id field), and what `provider_api.send` raises; ProviderError
    (502) for a non-2xx answer. Nothing is stored unless the provider created the item.
    """
    with transaction() as session:
        target = _target(session, actor.tenant_id, integration_id, entity, "create", user_id=user_id)
    request = target.definition.create
    answer = _send(ctx, actor, target, request.method, request.path, body=_wrapped(request, data))
    item = _item(target.definition, request, answer)
    return _store(actor, target, item, action="record.create", changes={"entity": entity, "data": data})


def update(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, record_id: uuid.UUID,
           owner_keys: Sequence[str] | None, data: dict[str, Any], base: datetime) -> Record:
    """Change the record at the provider with `data` unless the provider's copy moved past `base`, then store the answer.

    `base` is the `metadata.lastModifiedAt` the client built its change on. Raises NotFound
    (record not readable by `owner_keys`), InvalidInput (no `write.update`), RecordConflict (409,
    nothing written: the record is deleted, or changed after `base` at the hub or the provider),
    and what `provider_api.send` raises.
    """
    record, target = _record_target(actor, integration_id, record_id, owner_keys, "update")
    yours = {"data": data, "lastModifiedAt": _instant(base)}
    if record.deleted_at is not None:
        raise RecordConflict("The record was deleted; it cannot be changed", details={"current": None, "yours": yours})
    request = target.definition.update
    path = request.path.replace("{id}", _quoted(record.external_id))
    current = _send(ctx, actor, target, "GET", path)
    if current.status in (404, 410):
        raise RecordConflict("The provider no longer has the record", details={"current": None, "yours": yours})
    current_item = _item(target.definition, request, current.raise_for_status(f"GET {path}"))
    if _changed_since(record, base, target.definition, current_item):
        raise RecordConflict("The provider's copy of the record changed after the copy your change was based on",
                             details={"current": current_item.data, "yours": yours})
    answer = _send(ctx, actor, target, request.method, path, body=_wrapped(request, data))
    answer.raise_for_status(f"{request.method} {path}")
    # A provider answering the update without the record (204) is asked for it.
    item = _item(target.definition, request,
                 answer if answer.json() is not None else _send(ctx, actor, target, "GET", path))
    return _store(actor, target, item, action="record.update",
                  changes={"recordId": str(record_id), "data": data, "lastModifiedAt": yours["lastModifiedAt"]})


def delete(ctx: FlowContext, *, actor: audit.Actor, integration_id: uuid.UUID, record_id: uuid.UUID,
           owner_keys: Sequence[str] | None) -> Record:
    """Delete the record at the provider (404/410 there count as deleted), then keep and return its tombstone.

    Raises NotFound, InvalidInput (no `write.delete`), RecordConflict (already deleted), and
    what `provider_api.send` raises.
    """
    record, target = _record_target(actor, integration_id, record_id, owner_keys, "delete")
    if record.deleted_at is not None:
        raise RecordConflict("The record is already deleted", details={"current": None, "yours": None})
    request = target.definition.delete
    path = request.path.replace("{id}", _quoted(record.external_id))
    answer = _send(ctx, actor, target, request.method, path)
    if answer.status not in (404, 410):
        answer.raise_for_status(f"{request.method} {path}")
    # The provider's deletion time is unknown (a 204 has no body): a copy without a time always
    # applies, and the stored providerUpdatedAt stays the last one the provider gave.
    item = records.Item(external_id=record.external_id, data=record.data, provider_updated_at=None, deleted=True)
    return _store(actor, target, item, action="record.delete", changes={"recordId": str(record_id)})


def _target(session, tenant_id: uuid.UUID, integration_id: uuid.UUID, entity: str, action: str, *,
            user_id: uuid.UUID | None) -> _Target:
    integration = integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    provider = session.get(Provider, integration.provider_id)
    definition = sync_definitions.definitions(provider.available_entities).get(entity)
    if definition is None:
        raise InvalidInput(f"{provider.display_name} declares no synced entity {entity!r}", details={"field": "entity"})
    if getattr(definition, action) is None:
        raise InvalidInput(f"{provider.display_name} declares no write.{action} request for {entity}; "
                           "its records are read-only", details={"field": "entity", "entity": entity})
    return _Target(integration.id, user_id, "tenant" if user_id is None else str(user_id), definition)


def _record_target(actor: audit.Actor, integration_id: uuid.UUID, record_id: uuid.UUID,
                   owner_keys: Sequence[str] | None, action: str) -> tuple[Record, _Target]:
    with transaction() as session:
        integrations.get(session, tenant_id=actor.tenant_id, integration_id=integration_id)  # 404 before the record
        record = records.get(session, tenant_id=actor.tenant_id, integration_id=integration_id, record_id=record_id,
                             owner_keys=owner_keys)
        target = _target(session, actor.tenant_id, integration_id, record.entity, action, user_id=record.user_id)
    return record, target


def _send(ctx: FlowContext, actor: audit.Actor, target: _Target, method: str, path: str,
          body: Any = None) -> provider_api.ProviderResponse:
    kwargs = {"json": body} if body is not None else {}
    return provider_api.send(ctx, tenant_id=actor.tenant_id, integration_id=target.integration_id,
                             user_id=target.user_id, method=method, path=path, **kwargs)


def _wrapped(request: sync_definitions.WriteRequest, data: dict[str, Any]) -> dict[str, Any]:
    return {request.body_key: data} if request.body_key else data


def _item(definition: sync_definitions.SyncDefinition, request: sync_definitions.WriteRequest,
          answer: provider_api.ProviderResponse) -> records.Item:
    """The provider's copy in a 2xx answer (unwrapped from `bodyKey` when it is enveloped)."""
    answer.raise_for_status(f"{request.method} {request.path}")
    body = answer.json()
    if request.body_key and isinstance(body, dict) and isinstance(body.get(request.body_key), dict):
        body = body[request.body_key]
    if not isinstance(body, dict):
        raise provider_api.ProviderError("The provider's answer is not the record (a JSON object)",
                                         details={"providerStatus": answer.status})
    try:
        return records.Item(external_id=item_id(definition, body), data=body,
                            provider_updated_at=parse_updated_at(definition, body))
    except DefinitionMismatch as exc:
        raise provider_api.ProviderError(f"The provider's answer does not match the entity definition: {exc}",
                                         details={"providerStatus": answer.status}) from None


def _changed_since(record: Record, base: datetime, definition: sync_definitions.SyncDefinition,
                   current: records.Item) -> bool:
    """True when the change based on `base` would overwrite a copy the client has not seen."""
    if as_utc(record.last_modified_at) - as_utc(base) >= _PRECISION:
        return True  # the hub stored a newer copy (a sync, a webhook, another write) after the client read
    if definition.updated_at_field and current.provider_updated_at and record.provider_updated_at:
        return current.provider_updated_at > as_utc(record.provider_updated_at)
    return current.data != record.data


def _store(actor: audit.Actor, target: _Target, item: records.Item, *, action: str, changes: dict) -> Record:
    entity = target.definition.entity
    with transaction() as session:
        outcome = records.upsert(session, tenant_id=actor.tenant_id, integration_id=target.integration_id,
                                 owner_key=target.owner_key, user_id=target.user_id, entity=entity, items=[item],
                                 now=utcnow())
        changed = outcome.changed()
        row = changed[0] if changed else records.find(session, tenant_id=actor.tenant_id,
                                                      integration_id=target.integration_id,
                                                      owner_key=target.owner_key, entity=entity,
                                                      external_id=item.external_id)
        if changed:
            events.record_change(session, tenant_id=actor.tenant_id, actor=actor, action=action,
                                 resource_type="record", resource_id=row.id, event_type="records.changed",
                                 data=records.changed_event_data(integration_id=target.integration_id, entity=entity,
                                                                 trigger=TRIGGER, run_id=None, changes=outcome),
                                 changes=changes)
        else:
            # The provider answered with the copy the hub already holds (or an older one): audited, no event.
            audit.record(session, tenant_id=actor.tenant_id, actor=actor, action=action, resource_type="record",
                         resource_id=row.id if row is not None else None, changes=changes)
        return row


def _instant(moment: datetime) -> str:
    return as_utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _quoted(external_id: str) -> str:
    # An id is one path segment: `a/b` or `..` must not reach another path of the provider.
    return quote(external_id, safe="")
