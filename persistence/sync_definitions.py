"""Declarative entity sync definitions: their typed form and the rules checked when a provider is saved.

A provider's `availableEntities[*].sync` (contract: `EntitySyncDefinition` in
openapi/components/providers.yaml) says how to list, page, filter by change and write one
entity, so no provider needs code of its own. The JSON schema checks the structure; this module
checks what the schema cannot (cross-field rules) and turns a valid definition into frozen
dataclasses that the sync engine in `connectors/` reads. Pure: no HTTP, no database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from persistence.errors import InvalidInput

PAGING_TYPES = ("cursor", "offset", "page", "link_header", "none")
TIME_FORMATS = ("rfc3339", "unix_seconds")
CURSOR_SOURCES = ("nextCursorPath", "nextCursorHeader", "nextCursorItemField")
# Schemes and the authority marker a relative path must never carry (the schema's pattern already
# refuses them; checked again here because seed data does not pass through the request validator).
_FORBIDDEN_IN_PATH = ("://", "?", "#", "\\")


@dataclass(frozen=True)
class Paging:
    """How a list pages (`EntitySyncPaging`); parameter names are query parameter names."""

    type: str
    cursor_param: str | None = None
    limit_param: str | None = None
    offset_param: str | None = None
    page_param: str | None = None
    page_size: int | None = None
    first_page: int = 1
    next_cursor_path: str | None = None
    next_cursor_header: str | None = None
    next_cursor_item_field: str | None = None
    has_more_path: str | None = None
    end_of_stream_path: str | None = None


@dataclass(frozen=True)
class Incremental:
    """The "changed since" parameter (`param`), its value `format` (rfc3339 | unix_seconds), `required`."""

    param: str
    format: str
    required: bool = False


@dataclass(frozen=True)
class WriteRequest:
    """One write request: HTTP `method`, `path` under apiBaseUrl (with `{id}`), optional body envelope key."""

    method: str
    path: str
    body_key: str | None = None


@dataclass(frozen=True)
class FetchRequest:
    """How to read one item: HTTP `method` (GET), `path` under apiBaseUrl (with `{id}`), where the item sits."""

    method: str
    path: str
    item_path: str | None = None


@dataclass(frozen=True)
class SyncDefinition:
    """The typed `sync` definition of one entity (see `EntitySyncDefinition` in the contract)."""

    entity: str
    path: str
    items_path: str
    id_field: str
    paging: Paging
    params: Mapping[str, str] = field(default_factory=dict)
    updated_at_field: str | None = None
    updated_at_format: str = "rfc3339"
    title_field: str | None = None
    searchable_fields: tuple[str, ...] = ()
    deleted_field: str | None = None
    incremental: Incremental | None = None
    create: WriteRequest | None = None
    update: WriteRequest | None = None
    delete: WriteRequest | None = None
    source: str | None = None
    fetch: FetchRequest | None = None


def parse_definition(entity: Mapping[str, Any]) -> SyncDefinition | None:
    """Return the SyncDefinition of one `availableEntities` item, or None when it declares no `sync`.

    Expects an already validated item (see `validate_entity_definitions`); a KeyError means it was not.
    """
    raw = entity.get("sync")
    if raw is None:
        return None
    paging = raw["paging"]
    incremental = raw.get("incremental")
    write = raw.get("write") or {}
    return SyncDefinition(
        entity=entity["name"],
        path=raw["path"],
        items_path=raw.get("itemsPath", ""),
        id_field=raw["idField"],
        paging=Paging(
            type=paging["type"],
            cursor_param=paging.get("cursorParam"),
            limit_param=paging.get("limitParam"),
            offset_param=paging.get("offsetParam"),
            page_param=paging.get("pageParam"),
            page_size=paging.get("pageSize"),
            first_page=paging.get("firstPage", 1),
            next_cursor_path=paging.get("nextCursorPath"),
            next_cursor_header=paging.get("nextCursorHeader"),
            next_cursor_item_field=paging.get("nextCursorItemField"),
            has_more_path=paging.get("hasMorePath"),
            end_of_stream_path=paging.get("endOfStreamPath"),
        ),
        params=dict(raw.get("params") or {}),
        updated_at_field=raw.get("updatedAtField"),
        updated_at_format=raw.get("updatedAtFormat", "rfc3339"),
        title_field=raw.get("titleField"),
        searchable_fields=tuple(raw.get("searchableFields") or ()),
        deleted_field=raw.get("deletedField"),
        incremental=Incremental(incremental["param"], incremental["format"], bool(incremental.get("required", False)))
        if incremental else None,
        create=_write_request(write.get("create")),
        update=_write_request(write.get("update")),
        delete=_write_request(write.get("delete")),
        source=raw.get("source"),
        fetch=FetchRequest(raw["fetch"]["method"], raw["fetch"]["path"], raw["fetch"].get("itemPath"))
        if raw.get("fetch") else None,
    )


def definitions(available_entities: Sequence[Mapping[str, Any]] | None) -> dict[str, SyncDefinition]:
    """Return {entity name: SyncDefinition} for the entities of a provider that declare `sync`."""
    parsed = (parse_definition(entity) for entity in available_entities or ())
    return {definition.entity: definition for definition in parsed if definition is not None}


def validate_entity_definitions(available_entities: Sequence[Mapping[str, Any]] | None) -> None:
    """Check the cross-field rules of every entity's `sync` definition; raise InvalidInput on the first break.

    The JSON schema checks types, bounds and patterns; these are the rules it cannot express:
    - `path` and every write `path` are relative to `apiBaseUrl`: one leading `/`, no scheme,
      host, query, fragment, backslash or `..` segment (a definition cannot aim the hub's
      credentials at another host: no SSRF through provider data);
    - paging `cursor` needs `cursorParam` and exactly one of `nextCursorPath`,
      `nextCursorHeader`, `nextCursorItemField`; `offset` needs `offsetParam`, `limitParam` and
      `pageSize`; `page` needs `pageParam` and `pageSize`; `none` takes no paging parameter;
      parameters of another paging type are refused rather than silently ignored;
    - `write.update.path` and `write.delete.path` contain `{id}`, `write.create.path` does not,
      and no other `{...}` placeholder appears; `delete` carries no `bodyKey`;
    - `fetch.path` holds `{id}` and no other placeholder (the same path rules);
    - `searchableFields` are names among the entity's `fields`;
    - `updatedAtFormat` needs an `updatedAtField`.
    The error's `details.field` names the offending field, e.g.
    `availableEntities[0].sync.paging.cursorParam` (answered as 400 VALIDATION_ERROR).
    """
    for index, entity in enumerate(available_entities or ()):
        sync = entity.get("sync")
        if sync is None:
            continue
        where = f"availableEntities[{index}].sync"
        _check_path(sync.get("path", ""), field=f"{where}.path", id_placeholder=False)
        _check_paging(sync.get("paging") or {}, where=f"{where}.paging")
        field_names = {item.get("name") for item in entity.get("fields") or ()}
        for position, name in enumerate(sync.get("searchableFields") or ()):
            if name not in field_names:
                raise InvalidInput(f"searchableFields must name fields of entity {entity.get('name')!r}; {name!r} is not one",
                                   details={"field": f"{where}.searchableFields[{position}]"})
        if "updatedAtFormat" in sync and not sync.get("updatedAtField"):
            raise InvalidInput("updatedAtFormat needs an updatedAtField", details={"field": f"{where}.updatedAtFormat"})
        for action, request in (sync.get("write") or {}).items():
            _check_path(request.get("path", ""), field=f"{where}.write.{action}.path", id_placeholder=action != "create")
            if action == "delete" and request.get("bodyKey"):
                raise InvalidInput("a delete request carries no body", details={"field": f"{where}.write.delete.bodyKey"})
        if sync.get("fetch"):
            _check_path(sync["fetch"].get("path", ""), field=f"{where}.fetch.path", id_placeholder=True)


_PAGING_REQUIRED = {
    "cursor": ("cursorParam",),
    "offset": ("offsetParam", "limitParam", "pageSize"),
    "page": ("pageParam", "pageSize"),
    "link_header": (),
    "none": (),
}
_PAGING_ALLOWED = {
    "cursor": {"cursorParam", "limitParam", "pageSize", "hasMorePath", "endOfStreamPath", *CURSOR_SOURCES},
    "offset": {"offsetParam", "limitParam", "pageSize", "hasMorePath"},
    "page": {"pageParam", "limitParam", "pageSize", "firstPage", "hasMorePath"},
    "link_header": {"limitParam", "pageSize"},
    "none": set(),
}


def _check_paging(paging: Mapping[str, Any], *, where: str) -> None:
    kind = paging.get("type")
    if kind not in PAGING_TYPES:
        raise InvalidInput(f"paging.type must be one of {', '.join(PAGING_TYPES)}", details={"field": f"{where}.type"})
    for name in _PAGING_REQUIRED[kind]:
        if paging.get(name) in (None, ""):
            raise InvalidInput(f"paging type {kind} needs {name}", details={"field": f"{where}.{name}"})
    for name in paging:
        if name != "type" and name not in _PAGING_ALLOWED[kind]:
            raise InvalidInput(f"{name} does not apply to paging type {kind}", details={"field": f"{where}.{name}"})
    if kind == "cursor" and sum(1 for name in CURSOR_SOURCES if paging.get(name)) != 1:
        raise InvalidInput("paging type cursor needs exactly one of nextCursorPath, nextCursorHeader, nextCursorItemField",
                           details={"field": f"{where}.nextCursorPath"})


def _check_path(path: str, *, field: str, id_placeholder: bool) -> None:
    if not path.startswith("/") or path.startswith("//") or any(part in path for part in _FORBIDDEN_IN_PATH):
        raise InvalidInput("path must be relative to apiBaseUrl: one leading '/', no scheme, host, query or fragment",
                           details={"field": field})
    # Percent-decoded too: `%2e%2e` is `..` to many servers.
    if any(unquote(segment) in ("..", ".") or "/" in unquote(segment) for segment in path.split("/")):
        raise InvalidInput("path must not contain '.' or '..' segments", details={"field": field})
    placeholders = path.count("{")
    if id_placeholder and "{id}" not in path:
        raise InvalidInput("path must contain {id}", details={"field": field})
    if placeholders != (1 if id_placeholder else 0) or path.count("}") != placeholders:
        raise InvalidInput("path may hold only the {id} placeholder, and only in update and delete requests",
                           details={"field": field})


def _write_request(raw: Mapping[str, Any] | None) -> WriteRequest | None:
    return WriteRequest(raw["method"], raw["path"], raw.get("bodyKey")) if raw else None
