"""The same lists paged in every style a sync definition knows, one endpoint per style.

`GET /paged/<style>/<kind>` for kind accounts | contacts, all ordered by (updatedAt, id) and
filtered like the main lists (`updated_since` inclusive, which also shows soft-deleted records;
`q`). The main `/accounts` and `/contacts` lists are the `cursor` style (`cursor` / `limit`,
`nextCursor` in the body).

| style | request | answer |
|---|---|---|
| offset | `offset`, `limit` | `{"data": [...], "total": n}` |
| page | `page` (from 1), `per_page` | `{"result": {"items": [...]}, "page": p}` |
| link_header | `limit`, `cursor` | a top-level array; `Link: <url>; rel="next"` (RFC 8288) |
| last_id | `starting_after` (an id), `limit` | `{"data": [...], "has_more": bool}` (Stripe's style) |
| none | — | `{"records": [...]}`, everything at once |
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from flask import Blueprint, Response, g, jsonify, request

from connectors.sandbox.api import READ_SCOPE, SEARCH_FIELDS, ApiError
from connectors.sandbox.paging import (
    MAX_LIMIT,
    QueryError,
    encode_cursor,
    parse_list_query,
    run_list_query,
)
from connectors.sandbox.state import SandboxState

STYLES = ("offset", "page", "link_header", "last_id", "none")
MAX_POSITION = 1_000_000


def register_paging_routes(blueprint: Blueprint, state: SandboxState) -> None:
    """Add `GET /paged/<style>/<kind>` to the API blueprint (which authenticates it)."""

    @blueprint.get("/paged/<any(offset, page, link_header, last_id, none):style>/<any(accounts, contacts):kind>")
    def paged_list(style: str, kind: str) -> Response:
        """Serve one page of `kind` in paging `style`."""
        if READ_SCOPE not in g.principal.scopes:
            raise ApiError(403, "insufficient_scope", f"This operation needs the '{READ_SCOPE}' scope")
        try:
            return _SERVE[style](state, kind)
        except QueryError as error:
            raise ApiError(400, "invalid_request", str(error)) from None


def _selected(state: SandboxState, kind: str, *, cursor: str | None = None) -> list[dict]:
    """Every record matching `updated_since` / `q` (and after `cursor`), in (updatedAt, id) order."""
    args = {name: request.args[name] for name in ("updated_since", "q") if name in request.args}
    if cursor:
        args["cursor"] = cursor
    query = parse_list_query(args)
    records = state.listable(kind, include_deleted=query.updated_since is not None)
    return run_list_query(records, replace(query, limit=len(records) + 1), search_fields=SEARCH_FIELDS[kind]).data


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise QueryError(f"{name} must be an integer between {low} and {high}")
    return value


def _offset(state: SandboxState, kind: str) -> Response:
    offset, limit = _int("offset", 0, 0, MAX_POSITION), _int("limit", 25, 1, MAX_LIMIT)
    records = _selected(state, kind)
    return jsonify({"data": records[offset:offset + limit], "total": len(records)})


def _page(state: SandboxState, kind: str) -> Response:
    page, per_page = _int("page", 1, 1, MAX_POSITION), _int("per_page", 25, 1, MAX_LIMIT)
    start = (page - 1) * per_page
    return jsonify({"result": {"items": _selected(state, kind)[start:start + per_page]}, "page": page})


def _link_header(state: SandboxState, kind: str) -> Response:
    limit = _int("limit", 25, 1, MAX_LIMIT)
    records = _selected(state, kind, cursor=request.args.get("cursor"))
    answer = jsonify(records[:limit])
    if len(records) > limit:
        params = {**request.args.to_dict(), "limit": str(limit), "cursor": encode_cursor(records[limit - 1])}
        next_url = request.base_url + "?" + urlencode(params)
        answer.headers["Link"] = f'<{next_url}>; rel="next"'
    return answer


def _last_id(state: SandboxState, kind: str) -> Response:
    limit = _int("limit", 25, 1, MAX_LIMIT)
    records = _selected(state, kind)
    after = request.args.get("starting_after")
    if after is not None:
        position = next((index for index, record in enumerate(records) if record["id"] == after), None)
        if position is None:
            raise QueryError("starting_after must be the id of a listed record")
        records = records[position + 1:]
    return jsonify({"data": records[:limit], "has_more": len(records) > limit})


def _none(state: SandboxState, kind: str) -> Response:
    return jsonify({"records": _selected(state, kind)})


_SERVE = {"offset": _offset, "page": _page, "link_header": _link_header, "last_id": _last_id, "none": _none}
