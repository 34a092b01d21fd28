"""Operations of tag `search` (openapi/paths/search.yaml): full-text search over the synced records.
Tenant admins search every integration of the tenant (every user's records, or one user's with
`userId`); a plain user only their own records of user-scoped integrations. Seed: integration API
implementation, "Search Endpoints"; issue 15."""

from __future__ import annotations

import re
import time
from typing import Any
from uuid import UUID

from handlers import keyset_cursor
from persistence import search_index, search_query
from persistence.db import transaction
from persistence.webhooks import timestamp
from server.errors import ApiError
from server.security import Caller

_FIELD_PATH = re.compile(r"[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,4}")


def search_integrations(body: dict, token_info: dict) -> dict:
    """Search the records of every integration the caller may search; hits grouped, all matches counted."""
    caller = Caller.from_token(token_info)
    started = time.perf_counter()
    query, filters = search_query.parse(body["query"]), _filters(body)
    every_owner, owner_key = _viewer(caller, body.get("userId"))
    requested = [UUID(value) for value in body["integrations"]] if "integrations" in body else None
    with transaction() as session:
        scope = search_index.scope(session, tenant_id=caller.tenant_id, integration_ids=requested,
                                   every_owner=every_owner, owner_key=owner_key)
        found = search_index.search(session, tenant_id=caller.tenant_id, within=scope.searchable, query=query,
                                    limit=body.get("limit", 10), offset=body.get("offset", 0), **filters)
    return results(found, scope=scope, started=started, limit=body.get("limit", 10), offset=body.get("offset", 0))


def search_integration(id: str, token_info: dict, query: str, entities: list[str] | None = None, limit: int = 10,
                       offset: int = 0, userId: str | None = None) -> dict:
    """Search the records of one integration (404 out of reach, 409 when its search is off)."""
    caller = Caller.from_token(token_info)
    started = time.perf_counter()
    parsed = search_query.parse(query)
    every_owner, owner_key = _viewer(caller, userId)
    with transaction() as session:
        source = search_index.one(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                  every_owner=every_owner, owner_key=owner_key)
        found = search_index.search(session, tenant_id=caller.tenant_id, within=[source], query=parsed,
                                    entities=set(entities) if entities else None, limit=limit, offset=offset)
    return {"results": [result_item(hit) for hit in found.hits], "total": found.total, "took": _took(started),
            "hasMore": found.has_more, "limit": limit, "offset": offset}


def results(found: search_index.Found, *, scope: search_index.Scope, started: float, limit: int, offset: int) -> dict:
    """The `SearchResults` answer: the hits, the same hits grouped by integration and entity, the counts."""
    items = [result_item(hit) for hit in found.hits]
    by_integration: dict[str, list[dict]] = {}
    by_entity: dict[str, list[dict]] = {}
    for item in items:
        by_integration.setdefault(item["integrationId"], []).append(item)
        by_entity.setdefault(item["entity"], []).append(item)
    return {"results": items, "total": found.total, "took": _took(started), "hasMore": found.has_more,
            "limit": limit, "offset": offset, "byIntegration": by_integration, "byEntity": by_entity,
            "totals": {"byIntegration": found.by_integration, "byEntity": found.by_entity},
            "notIndexed": scope.not_indexed}


def result_item(hit: search_index.Hit) -> dict:
    """One `SearchResultItem`."""
    record, integration = hit.record, hit.source.integration
    return {"id": str(record.id), "integrationId": str(integration.id), "integrationName": integration.name,
            "provider": hit.source.provider_key, "entity": record.entity, "externalId": record.external_id,
            "title": hit.title, "snippet": hit.snippet, "score": hit.score,
            "data": search_index.result_data(hit.source.entities.get(record.entity), record.data or {}),
            "lastModifiedAt": timestamp(record.provider_updated_at or record.last_modified_at)}


def _viewer(caller: Caller, user_id: str | None) -> tuple[bool, str | None]:
    """`(every_owner, owner_key)` of `search_index.scope` for this caller.

    A caller who may read the tenant's integrations (`integrations:read`: tenant admins and their
    tokens) reaches every integration and every user's records, or `user_id`'s only; anyone else
    only their own records, and naming another user is refused (403), as in the records API.
    """
    if "integrations:read" in caller.scopes:
        return True, str(UUID(user_id)) if user_id else None
    if user_id and UUID(user_id) != caller.user_id:
        raise ApiError(403, "PERMISSION_DENIED", "Only a tenant admin searches another user's records",
                       details={"field": "userId"})
    return False, str(caller.user_id)


def _filters(body: dict) -> dict[str, Any]:
    """The keyword filters of `search_index.search` from the request body (400 naming a bad field)."""
    filters = body.get("filters") or {}
    window = filters.get("dateRange") or {}
    start = keyset_cursor.instant(window.get("start"), "filters.dateRange.start")
    end = keyset_cursor.instant(window.get("end"), "filters.dateRange.end")
    if start and end and start > end:
        raise ApiError(400, "VALIDATION_ERROR", "filters.dateRange: start is after end",
                       details={"field": "filters.dateRange"})
    custom = filters.get("customFilters") or {}
    bad = sorted(path for path in custom if not _FIELD_PATH.fullmatch(path))
    if bad:
        raise ApiError(400, "VALIDATION_ERROR", "filters.customFilters: a key is a dotted field path (letters, "
                       "digits, _; at most 5 levels of 64 characters)", details={"field": "filters.customFilters"})
    entities = None
    for names in (body.get("entities"), filters.get("entityTypes")):
        if names is not None:
            entities = set(names) if entities is None else entities & set(names)
    return {"entities": entities, "modified_from": start, "modified_until": end, "custom": custom}


def _took(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
