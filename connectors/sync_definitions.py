"""Reading a provider's answers with an entity's sync definition: items, next page, changed-since value.

The sync engine walks a provider list as: `first_request` -> send -> `extract_items` ->
`next_request` -> ... until `next_request` answers None. The definitions are the typed ones of
`persistence.sync_definitions` (contract: `EntitySyncDefinition`). Pure functions over httpx
responses: nothing here sends a request, so the caller keeps the SSRF guard, credentials, retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

import httpx

from persistence.sync_definitions import Incremental, SyncDefinition

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MISSING = object()


class DefinitionMismatch(ValueError):
    """A provider answer does not have the shape its definition declares (no list at itemsPath, foreign link)."""


@dataclass(frozen=True)
class PageRequest:
    """One list request to send: the absolute `url` (without query) and its query `params` (strings)."""

    url: str
    params: Mapping[str, str] = field(default_factory=dict)


def field_value(document: Any, path: str, default: Any = None) -> Any:
    """Return the value at dotted `path` (`paging.next.after`) in nested dicts, or `default` when absent.

    An empty path returns the document itself (a top-level array answer).
    """
    if not path:
        return document
    current = document
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return default
        current = current[part]
    return current


def extract_items(definition: SyncDefinition, body: Any) -> list[dict]:
    """Return the items of a decoded list answer, found at `itemsPath` (null counts as no items).

    Raises DefinitionMismatch when `itemsPath` is absent or holds anything but a list of objects.
    """
    items = field_value(body, definition.items_path, _MISSING)
    if items is None:
        return []  # some APIs (Pipedrive) answer `"data": null` for an empty page
    if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
        where = definition.items_path or "the top level"
        raise DefinitionMismatch(f"{definition.entity}: expected a list of objects at {where}")
    return [dict(item) for item in items]


def incremental_value(incremental: Incremental, moment: datetime) -> str:
    """Return `moment` as the changed-since parameter value: RFC 3339 UTC `...Z` to the second, or Unix seconds.

    Rounded down to the second (the providers' filters are inclusive at that precision, so
    rounding down re-reads at most one second rather than missing one). Naive datetimes are refused.
    """
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    moment = moment.astimezone(timezone.utc)
    if incremental.format == "unix_seconds":
        return str(int(moment.timestamp() // 1))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def first_request(definition: SyncDefinition, base_url: str, *, since: datetime | None = None) -> PageRequest:
    """Return the first list request of a walk under `base_url` (the provider's apiBaseUrl).

    `since` (aware datetime) asks only for items changed at or after it (incremental run); None
    lists everything (full refresh), except that a `required` incremental parameter is then
    sent with the Unix epoch.
    """
    params = dict(definition.params)
    paging = definition.paging
    if paging.limit_param and paging.page_size:
        params[paging.limit_param] = str(paging.page_size)
    if paging.type == "offset":
        params[paging.offset_param] = "0"
    elif paging.type == "page":
        params[paging.page_param] = str(paging.first_page)
    incremental = definition.incremental
    if incremental is not None and (since is not None or incremental.required):
        params[incremental.param] = incremental_value(incremental, since or EPOCH)
    return PageRequest(url=base_url.rstrip("/") + definition.path, params=params)


def next_request(definition: SyncDefinition, request: PageRequest, response: httpx.Response,
                 items: list[dict]) -> PageRequest | None:
    """Return the request of the page after `response` (whose decoded `items` are given), or None at the end.

    The walk ends on an empty page, on `hasMorePath` false or `endOfStreamPath` true, on a page
    shorter than `pageSize` (offset, page), and when no next cursor or `rel="next"` link is given.
    A cursor walk's later requests drop the changed-since parameter (the cursor carries the
    position). A Link header URL must stay on the origin of the first request (RFC 8288 links
    are resolved against the response URL); another origin raises DefinitionMismatch.
    """
    paging = definition.paging
    if paging.type == "none" or not items:
        return None
    body = _json_or_none(response) if paging.type != "link_header" else None
    if paging.has_more_path and not field_value(body, paging.has_more_path):
        return None
    if paging.end_of_stream_path and field_value(body, paging.end_of_stream_path):
        return None
    params = dict(request.params)
    if paging.type == "cursor":
        cursor = _next_cursor(definition, response, body, items)
        if cursor in (None, ""):
            return None
        if definition.incremental is not None:
            params.pop(definition.incremental.param, None)
        params[paging.cursor_param] = str(cursor)
        return PageRequest(url=request.url, params=params)
    if paging.type in ("offset", "page"):
        if paging.page_size and len(items) < paging.page_size and not paging.has_more_path:
            return None
        if paging.type == "offset":
            params[paging.offset_param] = str(int(params.get(paging.offset_param, "0")) + len(items))
        else:
            params[paging.page_param] = str(int(params.get(paging.page_param, str(paging.first_page))) + 1)
        return PageRequest(url=request.url, params=params)
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    url = urljoin(str(response.url), link)
    if _origin(url) != _origin(request.url):
        raise DefinitionMismatch(f"{definition.entity}: the next link leaves the provider's origin")
    # Split the query off: httpx replaces a URL's query by `params` when both are given.
    parts = urlsplit(url)
    return PageRequest(url=urlunsplit(parts._replace(query="", fragment="")), params=dict(parse_qsl(parts.query)))


def parse_updated_at(definition: SyncDefinition, item: Mapping[str, Any]) -> datetime | None:
    """Return the item's `updatedAtField` as an aware UTC datetime, or None when undeclared or absent.

    Raises DefinitionMismatch when the value does not have the declared `updatedAtFormat`.
    """
    if not definition.updated_at_field:
        return None
    value = field_value(item, definition.updated_at_field)
    if value is None:
        return None
    try:
        if definition.updated_at_format == "unix_seconds":
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        moment = datetime.fromisoformat(str(value))
    except (TypeError, ValueError, OverflowError):
        raise DefinitionMismatch(f"{definition.entity}: {definition.updated_at_field} is not {definition.updated_at_format}") from None
    if moment.tzinfo is None:
        raise DefinitionMismatch(f"{definition.entity}: {definition.updated_at_field} carries no time zone")
    return moment.astimezone(timezone.utc)


def is_deleted(definition: SyncDefinition, item: Mapping[str, Any]) -> bool:
    """Return True when the item's `deletedField` is set (true or a timestamp); False without a deletedField."""
    return bool(definition.deleted_field and field_value(item, definition.deleted_field))


def item_id(definition: SyncDefinition, item: Mapping[str, Any]) -> str:
    """Return the item's `idField` as a string; DefinitionMismatch when it is missing."""
    value = field_value(item, definition.id_field)
    if value in (None, ""):
        raise DefinitionMismatch(f"{definition.entity}: an item has no {definition.id_field}")
    return str(value)


def _next_cursor(definition: SyncDefinition, response: httpx.Response, body: Any, items: list[dict]) -> Any:
    paging = definition.paging
    if paging.next_cursor_path:
        return field_value(body, paging.next_cursor_path)
    if paging.next_cursor_header:
        return response.headers.get(paging.next_cursor_header)
    return field_value(items[-1], paging.next_cursor_item_field)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
