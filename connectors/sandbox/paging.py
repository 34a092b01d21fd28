"""List queries of the sandbox REST API: parameter parsing, filters and keyset (cursor) paging.

Records are ordered by (updatedAt, id). The cursor is the opaque base64url form of the last
(updatedAt, id) served, so a page boundary stays correct even when records share a timestamp.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_QUERY_LENGTH = 100


class QueryError(ValueError):
    """A list parameter is malformed or out of range; the message names it (answered as 400)."""


@dataclass(frozen=True)
class ListQuery:
    """Validated list parameters. `after` is the decoded cursor position, or None for page one."""

    limit: int = DEFAULT_LIMIT
    after: tuple[str, str] | None = None
    updated_since: datetime | None = None
    q: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of records and the cursor of the next one (None on the last page)."""

    data: list[dict]
    next_cursor: str | None


def encode_cursor(record: dict) -> str:
    """Return the opaque cursor pointing just after `record`."""
    raw = json.dumps([record["updatedAt"], record["id"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Return the (updatedAt, id) position of `cursor`; raise QueryError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise QueryError("cursor is not valid") from None
    if not (isinstance(position, list) and len(position) == 2 and all(isinstance(p, str) for p in position)):
        raise QueryError("cursor is not valid")
    return position[0], position[1]


def parse_timestamp(value: str, *, name: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset (`Z` or `+hh:mm`) into aware UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(f"{name} must be an RFC 3339 timestamp such as 2024-12-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise QueryError(f"{name} must carry a time zone offset (Z or +hh:mm)")
    return moment.astimezone(timezone.utc)


def parse_list_query(args: Mapping[str, str]) -> ListQuery:
    """Validate `limit` (1-100), `cursor`, `updated_since` and `q`; raise QueryError on the first bad one."""
    raw_limit = args.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise QueryError(f"limit must be an integer between 1 and {MAX_LIMIT}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be an integer between 1 and {MAX_LIMIT}")
    cursor = args.get("cursor")
    since = args.get("updated_since")
    q = (args.get("q") or "").strip()
    if len(q) > MAX_QUERY_LENGTH:
        raise QueryError(f"q must be at most {MAX_QUERY_LENGTH} characters")
    return ListQuery(
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
        updated_since=parse_timestamp(since, name="updated_since") if since else None,
        q=q.lower() or None,
    )


def run_list_query(records: Iterable[dict], query: ListQuery, *, search_fields: tuple[str, ...]) -> Page:
    """Filter, order by (updatedAt, id) and cut one page of `records`.

    `updated_since` is inclusive (updatedAt >= it), so an incremental sync that passes the
    newest timestamp it saw gets that record again rather than missing a same-second update.
    `q` matches case-insensitively as a substring of the `search_fields` joined by spaces, so
    "ada lovelace" finds a contact whose firstName is Ada and lastName Lovelace.
    """
    selected = []
    for record in records:
        if query.updated_since and parse_timestamp(record["updatedAt"], name="updatedAt") < query.updated_since:
            continue
        if query.q and query.q not in " ".join(str(record[field]) for field in search_fields).lower():
            continue
        if query.after and (record["updatedAt"], record["id"]) <= query.after:
            continue
        selected.append(record)
    selected.sort(key=lambda record: (record["updatedAt"], record["id"]))
    page = selected[: query.limit]
    has_more = len(selected) > query.limit
    return Page(data=[dict(record) for record in page], next_cursor=encode_cursor(page[-1]) if has_more else None)
