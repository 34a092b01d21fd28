"""The search index over the records store, and the search over it (issue 15; seed: "Search Endpoints").

What is indexed: the live records of integrations with `searchEnabled`, for the entities in the
integration's `searchableEntities` (empty: the provider's `searchableEntities`) whose sync
definition names a `titleField` or `searchableFields`. A record's document is its title (the
`titleField` value, weighted highest) and its body (the other `searchableFields` values).

Kept in step in the writer's transaction: `persistence.records.upsert` and `tombstone_unseen`
call `index_changes`, so a record is findable when its sync page (or webhook, or write-through)
commits and a tombstoned one is gone at the same moment. `persistence.integrations.update`
calls `reindex` when `searchEnabled` or `searchableEntities` change, `delete` calls `drop`.
A provider whose definitions change (another `titleField`) is indexed the new way as its
records change; `reindex` rebuilds an integration at once.

Engines: SQLite FTS5 (`search_fts`, bm25 with column weights, `snippet`); PostgreSQL a weighted
`tsvector` with a GIN index (`ts_rank_cd`). Both receive the words of `persistence.search_query`
(PostgreSQL gets them pre-split, so both engines see the same words and the same query finds the
same records). Snippets: FTS5's `snippet` on SQLite; on PostgreSQL this module's `highlight`
(with the same words: `ts_headline` runs PostgreSQL's parser, which keeps `jane@acme.com` as one
token and so could not mark `acme` in it). Snippet text is HTML-escaped; only `<mark>` is markup.

Queries take `session` and `tenant_id` and never commit.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import search_query
from persistence.errors import Conflict, NotFound
from persistence.models import Integration, Provider, Record, SearchDocument, as_utc
from persistence.search_query import Query
from persistence.sync_definitions import SyncDefinition, definitions

# bm25 column weights (title, body) on SQLite; ts_rank_cd weights {D, C, B, A} on PostgreSQL
# (title A, body B): the same 10:1 ratio.
TITLE_WEIGHT = 10.0
BODY_WEIGHT = 1.0
_PG_WEIGHTS = "'{0.1, 0.1, 0.1, 1.0}'::float4[]"
MAX_TITLE_CHARS = 500
MAX_BODY_CHARS = 10_000
SNIPPET_WORDS = 24
# A result's `data` holds the indexed fields only, each value at most this long (JSON text).
MAX_DATA_VALUE_CHARS = 1000
_CHUNK = 500
_MARK_OPEN, _MARK_CLOSE = "\x02", "\x03"  # never in indexed text (control characters are removed)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WORD = re.compile(r"[^\W_]+")
_FTS_TABLES = re.compile(r"^search_fts(_(data|idx|content|docsize|config))?$")
_UPSERT_SET = ("ON CONFLICT (record_id) DO UPDATE SET owner_key = excluded.owner_key, entity = excluded.entity, "
               "title = excluded.title, body = excluded.body")
_PG_INSERT = (
    "INSERT INTO search_documents (record_id, tenant_id, integration_id, owner_key, entity, title, body, "
    "search_vector) VALUES (%s, %s, %s, %s, %s, %s, %s, "
    "setweight(to_tsvector('simple', %s), 'A') || setweight(to_tsvector('simple', %s), 'B')) "
    + _UPSERT_SET + ", search_vector = excluded.search_vector")
_SQLITE_INSERT = ("INSERT INTO search_documents (record_id, tenant_id, integration_id, owner_key, entity, title, body) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?) " + _UPSERT_SET)


def in_models(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Alembic `include_name` hook: False for the engine-specific objects migration 0011 makes outside the models.

    Those are SQLite's FTS5 table `search_fts` with its shadow tables, and PostgreSQL's
    `search_documents.search_vector` column with its GIN index `ix_search_documents_vector`.
    """
    if type_ == "table":
        return not _FTS_TABLES.match(name or "")
    if type_ == "column":
        return not (name == "search_vector" and parent_names.get("table_name") == "search_documents")
    if type_ == "index":
        return name != "ix_search_documents_vector"
    return True


def field_value(document: Any, path: str | None) -> Any:
    """Return the value at dotted `path` in nested dicts, or None (the reader of connectors/sync_definitions)."""
    current = document
    for part in (path or "").split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def document_text(definition: SyncDefinition, data: Mapping[str, Any]) -> tuple[str, str]:
    """Return `(title, body)` of one record: its `titleField` text and its other `searchableFields` texts.

    Lists and objects contribute their scalar leaves; booleans and nulls nothing. Control
    characters become spaces; the title is cut at MAX_TITLE_CHARS, the body at MAX_BODY_CHARS.
    """
    title = _text(field_value(data, definition.title_field)) if definition.title_field else ""
    parts = [_text(field_value(data, name)) for name in definition.searchable_fields if name != definition.title_field]
    body = "\n".join(part for part in parts if part)
    return _CONTROL.sub(" ", title)[:MAX_TITLE_CHARS], _CONTROL.sub(" ", body)[:MAX_BODY_CHARS]


def indexed_entities(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> dict[str, SyncDefinition]:
    """Return {entity: sync definition} of the integration's indexed entities ({} when search is off)."""
    row = session.exec(
        select(Integration.search_enabled, Integration.searchable_entities, Provider.searchable_entities,
               Provider.available_entities)
        .join(Provider, Provider.id == Integration.provider_id)
        .where(Integration.tenant_id == tenant_id, Integration.id == integration_id)).first()
    if row is None or not row[0]:
        return {}
    return _indexable(row[1] or row[2], row[3])


def index_changes(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, entity: str,
                  changes: Any) -> None:
    """Bring the index in step with what one `records.upsert`/`tombstone_unseen` call changed (flushed rows).

    `changes` is that call's `persistence.records.Changes` (its `added`, `updated`, `deleted`
    Record lists; records imports this module, so the type is not imported here).

    Added and updated records of an indexed entity get their document written (or replaced);
    tombstoned ones lose it. Records of entities or integrations that are not indexed cost one
    lookup of the integration.
    """
    _delete(session, [row.id for row in changes.deleted])
    live = [*changes.added, *changes.updated]
    if not live:
        return
    definition = indexed_entities(session, tenant_id=tenant_id, integration_id=integration_id).get(entity)
    if definition is not None:
        _write(session, definition, live)


def reindex(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> int:
    """Rebuild the integration's documents from its live records (after its search settings changed).

    Returns how many documents it holds now. Reads the records in chunks by id.
    """
    drop(session, tenant_id=tenant_id, integration_id=integration_id)
    written = 0
    for entity, definition in indexed_entities(session, tenant_id=tenant_id, integration_id=integration_id).items():
        after: uuid.UUID | None = None
        while True:
            stmt = select(Record).where(Record.tenant_id == tenant_id, Record.integration_id == integration_id,
                                        Record.entity == entity, Record.deleted_at.is_(None))
            if after is not None:
                stmt = stmt.where(Record.id > after)
            rows = list(session.exec(stmt.order_by(Record.id).limit(_CHUNK)).all())
            if not rows:
                break
            written += _write(session, definition, rows)
            after = rows[-1].id
    return written


def drop(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> None:
    """Remove every document of the integration (search switched off, or the integration deleted)."""
    session.execute(sa.delete(SearchDocument).where(SearchDocument.tenant_id == tenant_id,
                                                    SearchDocument.integration_id == integration_id))


@dataclass(frozen=True)
class Searchable:
    """One integration the caller may search: the row, its provider key, its indexed entities, and
    `owner_key` when only that owner's records are visible (None: every owner's)."""

    integration: Integration
    provider_key: str
    entities: Mapping[str, SyncDefinition]
    owner_key: str | None


@dataclass(frozen=True)
class Scope:
    """What a search covers: the searchable integrations, and the requested ones it does not
    (`[{"integrationId", "reason"}]`, reason `not_found` or `search_disabled`)."""

    searchable: list[Searchable]
    not_indexed: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Hit:
    """One found record with its integration, title, score (higher is better) and HTML snippet."""

    record: Record
    source: Searchable
    title: str
    score: float
    snippet: str


@dataclass(frozen=True)
class Found:
    """One page of hits (at most `limit` per integration, best first) and the counts of all matches."""

    hits: list[Hit]
    total: int
    has_more: bool
    by_integration: dict[str, int]
    by_entity: dict[str, int]


def scope(session: Session, *, tenant_id: uuid.UUID, integration_ids: Sequence[uuid.UUID] | None,
          every_owner: bool, owner_key: str | None) -> Scope:
    """Resolve which of the tenant's integrations a caller searches.

    `every_owner` (a tenant admin) reaches every integration, and on user-scoped integrations
    every user's records, or only `owner_key`'s when given. Otherwise (a plain user) only
    user-scoped integrations, and on them only `owner_key`'s records. `integration_ids`
    narrows the search; a requested id that is unknown, another tenant's or not reachable is
    reported `not_found` (all alike), one with search off `search_disabled`.
    """
    stmt = (select(Integration, Provider.provider, Provider.searchable_entities, Provider.available_entities)
            .join(Provider, Provider.id == Integration.provider_id).where(Integration.tenant_id == tenant_id))
    if integration_ids is not None:
        stmt = stmt.where(Integration.id.in_(list(integration_ids)))
    searchable: list[Searchable] = []
    disabled: set[uuid.UUID] = set()
    for integration, provider_key, provider_entities, available in session.exec(stmt.order_by(Integration.name)).all():
        if not every_owner and not integration.user_scoped:
            continue
        if not integration.search_enabled:
            disabled.add(integration.id)
            continue
        owner = owner_key if integration.user_scoped else None
        searchable.append(Searchable(integration, provider_key,
                                     _indexable(integration.searchable_entities or provider_entities, available), owner))
    reached = {item.integration.id for item in searchable} | disabled
    not_indexed = [{"integrationId": str(key), "reason": "search_disabled" if key in disabled else "not_found"}
                   for key in dict.fromkeys(integration_ids or ()) if key not in reached or key in disabled]
    return Scope(searchable, not_indexed)


def one(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, every_owner: bool,
        owner_key: str | None) -> Searchable:
    """Return one integration to search, under the rules of `scope`.

    Raises NotFound (INTEGRATION_NOT_FOUND) when it is unknown, another tenant's or out of the
    caller's reach, Conflict when its search is off.
    """
    found = scope(session, tenant_id=tenant_id, integration_ids=[integration_id], every_owner=every_owner,
                  owner_key=owner_key)
    if found.searchable:
        return found.searchable[0]
    if found.not_indexed and found.not_indexed[0]["reason"] == "search_disabled":
        raise Conflict(f"Search is not enabled for integration {integration_id} (searchEnabled is false)",
                       details={"reason": "search_disabled"})
    raise NotFound("integration", integration_id, code="INTEGRATION_NOT_FOUND")


def search(session: Session, *, tenant_id: uuid.UUID, within: Sequence[Searchable], query: Query,
           entities: Collection[str] | None = None, modified_from: datetime | None = None,
           modified_until: datetime | None = None, custom: Mapping[str, Any] | None = None,
           limit: int = 10, offset: int = 0) -> Found:
    """Search the documents of the `within` integrations for `query`.

    Filters: `entities` (entity names), `modified_from`/`modified_until` (inclusive bounds on
    the record's provider modification time, else the hub's), `custom` (dotted field path ->
    string, number or boolean that the record's data must hold there). Each integration
    contributes its hits ranked `offset + 1` to `offset + limit`; the page is ordered by score.
    `has_more` tells whether any integration has hits beyond this page.
    """
    if not within or (entities is not None and not entities):
        return Found([], 0, False, {}, {})
    dialect = session.get_bind().dialect.name
    docs = SearchDocument.__table__
    where = [docs.c.tenant_id == tenant_id, _access(docs, within)]
    if entities is not None:
        where.append(docs.c.entity.in_(sorted(entities)))
    with_records = bool(modified_from or modified_until or custom)
    if with_records:
        where += _record_filters(dialect, modified_from, modified_until, custom or {})

    def matching(ranked: bool):
        source, matches, score = _engine(dialect, docs, query, ranked=ranked)
        if with_records:
            source = source.join(Record.__table__, Record.__table__.c.id == docs.c.record_id)
        return source, [matches, *where], score

    source, conditions, _ = matching(False)
    counts = session.execute(select(docs.c.integration_id, docs.c.entity, sa.func.count()).select_from(source)
                             .where(*conditions).group_by(docs.c.integration_id, docs.c.entity)).all()
    by_integration: dict[str, int] = {}
    by_entity: dict[str, int] = {}
    for integration_id, entity, number in counts:
        by_integration[str(integration_id)] = by_integration.get(str(integration_id), 0) + number
        by_entity[entity] = by_entity.get(entity, 0) + number
    total = sum(by_integration.values())
    has_more = any(number > offset + limit for number in by_integration.values())
    if total == 0:
        return Found([], 0, False, {}, {})
    source, conditions, score = matching(True)
    inner = select(docs.c.id.label("doc_id"), docs.c.record_id, docs.c.integration_id, score.label("score")) \
        .select_from(source).where(*conditions).subquery()
    rank = sa.func.row_number().over(partition_by=inner.c.integration_id,
                                     order_by=(inner.c.score.desc(), inner.c.record_id)).label("rank")
    ranked = select(inner, rank).subquery()
    page = session.execute(select(ranked.c.doc_id, ranked.c.record_id, ranked.c.integration_id, ranked.c.score)
                           .where(ranked.c.rank > offset, ranked.c.rank <= offset + limit)
                           .order_by(ranked.c.score.desc(), ranked.c.record_id)).all()
    rows = _records(session, tenant_id=tenant_id, record_ids=[row.record_id for row in page])
    snippets = _snippets(session, dialect, query, [row.doc_id for row in page])
    sources = {item.integration.id: item for item in within}
    hits = []
    for row in page:
        record, source = rows.get(row.record_id), sources[row.integration_id]
        if record is not None:
            definition = source.entities.get(record.entity)
            title = document_text(definition, record.data or {})[0] if definition else ""
            hits.append(Hit(record, source, title, round(float(row.score), 6), snippets.get(row.doc_id, "")))
    return Found(hits, total, has_more, by_integration, by_entity)


def result_data(definition: SyncDefinition | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """The bounded `data` of a search result: the indexed fields (dotted paths) the record holds.

    A value whose JSON text exceeds MAX_DATA_VALUE_CHARS is left out (a string is cut instead).
    """
    if definition is None:
        return {}
    shown: dict[str, Any] = {}
    for name in dict.fromkeys([*([definition.title_field] if definition.title_field else []),
                               *definition.searchable_fields]):
        value = field_value(data, name)
        if isinstance(value, str):
            shown[name] = value[:MAX_DATA_VALUE_CHARS]
        elif value is not None and len(json.dumps(value, default=str)) <= MAX_DATA_VALUE_CHARS:
            shown[name] = value
    return shown


def highlight(title: str, body: str, query: Query) -> str:
    """Return a snippet of the first of `title`/`body` holding a term of `query`, matches in `<mark>`.

    Marks what FTS5's `snippet` marks: each matched word, and each phrase occurrence as one span
    (`<mark>acme-labs</mark>`). At most SNIPPET_WORDS words from a little before the first match,
    `…` where text was cut, HTML-escaped. Words are compared as the index splits and folds them.
    """
    for text in (title, body):
        spans = list(_WORD.finditer(text))
        marks = _matches([search_query.fold(span.group()) for span in spans], query)
        if not marks:
            continue
        start = max(0, marks[0][0] - SNIPPET_WORDS // 3)
        stop = min(len(spans), start + SNIPPET_WORDS)
        out = ["…" if start > 0 else ""]
        cursor = spans[start].start() if start > 0 else 0
        index = start
        while index < stop:
            group = next((mark for mark in marks if mark[0] == index), None)
            last = min(group[1], stop - 1) if group else index
            out.append(html.escape(text[cursor:spans[index].start()]))
            piece = html.escape(text[spans[index].start():spans[last].end()])
            out.append(f"<mark>{piece}</mark>" if group else piece)
            cursor, index = spans[last].end(), last + 1
        end = spans[stop - 1].end() if stop < len(spans) else len(text)
        out.append(html.escape(text[cursor:end]) + ("…" if end < len(text) else ""))
        return "".join(out)
    return html.escape(title or body[:200])


def _matches(words: list[str], query: Query) -> list[tuple[int, int]]:
    """The (first, last) word index ranges of `words` that the positive terms of `query` match, merged."""
    found: list[tuple[int, int]] = []
    for term in query.terms():
        size = len(term.words)
        for index in range(len(words) - size + 1):
            head, tail = words[index:index + size - 1], words[index + size - 1]
            if list(term.words[:-1]) == head and (tail.startswith(term.words[-1]) if term.prefix
                                                  else tail == term.words[-1]):
                found.append((index, index + size - 1))
    merged: list[tuple[int, int]] = []
    for first, last in sorted(found):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _indexable(entity_names: Sequence[str] | None, available: Sequence[Mapping[str, Any]] | None
               ) -> dict[str, SyncDefinition]:
    wanted = set(entity_names or ())
    return {name: definition for name, definition in definitions(available).items()
            if name in wanted and (definition.title_field or definition.searchable_fields)}


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, Mapping):
        return " ".join(filter(None, (_text(item) for item in value.values())))
    if isinstance(value, (list, tuple)):
        return " ".join(filter(None, (_text(item) for item in value)))
    return ""


def _write(session: Session, definition: SyncDefinition, rows: Sequence[Record]) -> int:
    documents, empty = [], []
    for row in rows:
        title, body = document_text(definition, row.data or {})
        if not (title.strip() or body.strip()):
            empty.append(row.id)
            continue
        documents.append({"record_id": row.id, "tenant_id": row.tenant_id, "integration_id": row.integration_id,
                          "owner_key": row.owner_key, "entity": row.entity, "title": title, "body": body})
    _delete(session, empty)
    if not documents:
        return 0
    # The driver's executemany straight away: this runs for every synced page, and SQLAlchemy's
    # per-row parameter processing cost as much as the index itself (scripts/bench --only search).
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_INSERT, [
            (document["record_id"], document["tenant_id"], document["integration_id"], document["owner_key"],
             document["entity"], document["title"], document["body"],
             " ".join(search_query.tokens(document["title"])), " ".join(search_query.tokens(document["body"])))
            for document in documents])
    else:  # sa.Uuid's SQLite storage: 32 hex digits
        connection.exec_driver_sql(_SQLITE_INSERT, [
            (document["record_id"].hex, document["tenant_id"].hex, document["integration_id"].hex,
             document["owner_key"], document["entity"], document["title"], document["body"])
            for document in documents])
    return len(documents)


def _delete(session: Session, record_ids: Sequence[uuid.UUID]) -> None:
    for start in range(0, len(record_ids), _CHUNK):
        session.execute(sa.delete(SearchDocument).where(SearchDocument.record_id.in_(record_ids[start:start + _CHUNK])))


def _engine(dialect: str, docs: sa.Table, query: Query, *, ranked: bool):
    """(FROM clause, match condition, score expression: higher is better, or None unless `ranked`)."""
    if dialect == "postgresql":
        vector = sa.literal_column("search_documents.search_vector")
        tsquery = sa.func.to_tsquery(sa.literal_column("'simple'"), sa.bindparam("tsquery", query.tsquery()))
        score = sa.func.ts_rank_cd(sa.literal_column(_PG_WEIGHTS), vector, tsquery) if ranked else None
        return docs, vector.op("@@")(tsquery), score
    # The full-text match runs first, on its own (a MATERIALIZED CTE): joined directly, SQLite's
    # planner prefers walking the tenant's documents by the scope index and probing FTS5 per row,
    # which costs the integration's size instead of the matches' (scripts/bench --only search).
    fts = sa.table("search_fts", sa.column("rowid"))
    columns = [fts.c.rowid.label("doc_id")]
    if ranked:
        columns.append((-sa.func.bm25(sa.literal_column("search_fts"), TITLE_WEIGHT, BODY_WEIGHT)).label("score"))
    hits = select(*columns).where(sa.literal_column("search_fts").op("MATCH")(sa.bindparam("match", query.fts5()))) \
        .cte("hits").prefix_with("MATERIALIZED")
    return hits.join(docs, docs.c.id == hits.c.doc_id), sa.true(), hits.c.score if ranked else None


def _access(docs: sa.Table, within: Sequence[Searchable]):
    every = [item.integration.id for item in within if item.owner_key is None]
    by_owner: dict[str, list[uuid.UUID]] = {}
    for item in within:
        if item.owner_key is not None:
            by_owner.setdefault(item.owner_key, []).append(item.integration.id)
    clauses = [docs.c.integration_id.in_(every)] if every else []
    clauses += [sa.and_(docs.c.integration_id.in_(ids), docs.c.owner_key == owner) for owner, ids in by_owner.items()]
    return sa.or_(*clauses)


def _record_filters(dialect: str, modified_from: datetime | None, modified_until: datetime | None,
                    custom: Mapping[str, Any]) -> list:
    records = Record.__table__
    when = sa.func.coalesce(records.c.provider_updated_at, records.c.last_modified_at, type_=sa.DateTime(timezone=True))
    where = []
    if modified_from is not None:
        where.append(when >= as_utc(modified_from))
    if modified_until is not None:
        where.append(when <= as_utc(modified_until))
    for path, value in custom.items():
        where.append(_equals(dialect, records.c.data, path.split("."), value))
    return where


def _equals(dialect: str, data, path: list[str], value: Any):
    """`data` at `path` holds `value` (same JSON type: "5" does not equal 5), on either database."""
    if dialect == "postgresql":
        node = data[tuple(path)]
        kind = sa.func.json_typeof(node)
        text = node.as_string()
        if isinstance(value, bool):
            return sa.and_(kind == "boolean", text == ("true" if value else "false"))
        if isinstance(value, (int, float)):
            return sa.case((kind == "number", sa.cast(text, sa.Numeric)), else_=None) == value
        return sa.and_(kind == "string", text == value)
    where = "$" + "".join(f'."{part}"' for part in path)
    kind = sa.func.json_type(data, where)
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    extracted = sa.func.json_extract(data, where)
    if isinstance(value, (int, float)):
        return sa.and_(kind.in_(("integer", "real")), extracted == value)
    return sa.and_(kind == "text", extracted == value)


def _records(session: Session, *, tenant_id: uuid.UUID, record_ids: list[uuid.UUID]) -> dict[uuid.UUID, Record]:
    if not record_ids:
        return {}
    # By primary key alone, the tenant checked on the rows: given `tenant_id = ?` too, SQLite's planner
    # walks the tenant's index (all its records) instead of looking the ten ids up.
    rows = session.exec(select(Record).where(Record.id.in_(record_ids))).all()
    return {row.id: row for row in rows if row.tenant_id == tenant_id and row.deleted_at is None}


def _snippets(session: Session, dialect: str, query: Query, doc_ids: list[int]) -> dict[int, str]:
    if not doc_ids:
        return {}
    docs = SearchDocument.__table__
    if dialect == "postgresql":
        rows = session.execute(select(docs.c.id, docs.c.title, docs.c.body).where(docs.c.id.in_(doc_ids))).all()
        return {row.id: highlight(row.title, row.body, query) for row in rows}
    fts = sa.table("search_fts", sa.column("rowid"))
    snippet = sa.func.snippet(sa.literal_column("search_fts"), -1, _MARK_OPEN, _MARK_CLOSE, "…", SNIPPET_WORDS)
    rows = session.execute(select(fts.c.rowid, snippet).where(
        sa.literal_column("search_fts").op("MATCH")(sa.bindparam("match", query.fts5())),
        fts.c.rowid.in_(doc_ids))).all()
    return {rowid: html.escape(text or "").replace(_MARK_OPEN, "<mark>").replace(_MARK_CLOSE, "</mark>")
            for rowid, text in rows}
