"""The records store: provider objects as the hub last saw them, written by every data path.

Seeds: the integrations document ("Data Synchronization": last-write-wins), the PrintShop guide
("Data Synchronization": polling plus webhooks). Sync pages, write-through answers and incoming
webhooks all write through `upsert` (and a successful full refresh through `tombstone_unseen`),
so the rules live here once:

- Last-write-wins by the provider's own modification time (`provider_updated_at`): a copy older
  than the stored one is *stale* and writes nothing. A copy without a time always applies.
- An unchanged copy (same SHA-256 of its canonical JSON) writes nothing and is not reported;
  only the full-refresh seen marker (`last_seen_run_id`) is set.
- A deleted copy tombstones the record (`deleted_at`, `last_action` "deleted"); the row stays so
  the records API can report the deletion. A tombstone seen alive again comes back as "updated".
- Ordering: every writer of an integration's records first takes that integration's
  `record_sequences` row (an UPDATE, which holds its lock until commit on PostgreSQL and takes
  the database write lock on SQLite), then reads the stored copies. Writers of one integration
  therefore commit one after another, and each change gets a `seq` larger than every committed
  one: a reader walking `seq` upwards (the records API cursor) never misses a change; it may
  see a record again after a later change.

Queries take `session` and `tenant_id` and never commit: the caller's transaction also holds
the run checkpoint or the request's audit entry and event.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from persistence import search_index
from persistence.connections import owner_key
from persistence.errors import InvalidInput, NotFound, PermissionDenied
from persistence.models import Integration, Record, RecordSequence, as_utc
from persistence.webhooks import timestamp

ACTIONS = ("added", "updated", "deleted")
# Bounded IN lists: SQLite's default limit is 32766 host parameters, and PostgreSQL plans
# shorter lists better.
_CHUNK = 500
# `records.changed` carries at most this many ids; the counts are always exact.
EVENT_IDS_LIMIT = 100


@dataclass(frozen=True)
class Item:
    """One provider copy of an object, as a sync page, a write-through answer or a webhook gives it.

    `external_id` is the provider's id; `data` the object as the provider answered it;
    `provider_updated_at` the provider's modification time (aware UTC, or None when the provider
    has none); `deleted` set when the provider reports the object deleted.
    """

    external_id: str
    data: dict
    provider_updated_at: datetime | None = None
    deleted: bool = False


@dataclass
class Changes:
    """What one `upsert` or `tombstone_unseen` call did: the changed rows, and how many copies did nothing."""

    added: list[Record] = field(default_factory=list)
    updated: list[Record] = field(default_factory=list)
    deleted: list[Record] = field(default_factory=list)
    unchanged: int = 0
    stale: int = 0

    def counts(self) -> dict[str, int]:
        """`{"added": n, "updated": n, "deleted": n}`, as `records.changed` and sync runs report them."""
        return {"added": len(self.added), "updated": len(self.updated), "deleted": len(self.deleted)}

    def changed(self) -> list[Record]:
        """Every row this call changed (added, then updated, then deleted)."""
        return [*self.added, *self.updated, *self.deleted]

    def merge(self, other: Changes) -> None:
        """Add `other`'s rows and counts to these (a run summing its pages)."""
        self.added += other.added
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged
        self.stale += other.stale


def content_hash(data: Any) -> str:
    """SHA-256 hex of the canonical JSON of `data` (sorted keys, no spaces): equal content, equal hash."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def upsert(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, owner_key: str,
           user_id: uuid.UUID | None, entity: str, items: Sequence[Item], now: datetime,
           seen_run_id: uuid.UUID | None = None) -> Changes:
    """Store `items` (provider copies of one entity of one connection) by the rules of the module docstring.

    `owner_key` is the connection's owner ("tenant" or a user id, as
    `persistence.connections.owner_key`), `user_id` that user (None for the tenant's
    connection); `now` the hub time stamped on changes; `seen_run_id` the full-refresh run that
    saw these items (None for other writers). Two copies of one id in `items` count as one:
    the newer wins. Returns the `Changes`; the rows are flushed, not committed.
    """
    latest: dict[str, Item] = {}
    for item in items:
        kept = latest.get(item.external_id)
        if kept is None or not _older(item.provider_updated_at, kept.provider_updated_at):
            latest[item.external_id] = item
    changes = Changes()
    if not latest:
        return changes
    next_seq = _take_sequence(session, integration_id=integration_id, count=len(latest)) - len(latest)
    stored = _stored(session, tenant_id=tenant_id, integration_id=integration_id, owner_key=owner_key,
                     entity=entity, external_ids=list(latest))
    seen_unchanged: list[uuid.UUID] = []
    for external_id, item in latest.items():
        row = stored.get(external_id)
        updated_at = as_utc(item.provider_updated_at)
        digest = content_hash(item.data)
        if row is None:
            if item.deleted:
                changes.unchanged += 1  # never seen alive: nothing to tombstone
                continue
            next_seq += 1
            row = Record(tenant_id=tenant_id, integration_id=integration_id, owner_key=owner_key, user_id=user_id,
                         entity=entity, external_id=external_id, data=item.data, content_hash=digest,
                         provider_updated_at=updated_at, first_seen_at=now, last_modified_at=now,
                         last_action="added", seq=next_seq, last_seen_run_id=seen_run_id)
            session.add(row)
            changes.added.append(row)
            continue
        if _older(updated_at, as_utc(row.provider_updated_at)):
            changes.stale += 1
            if seen_run_id is not None and row.last_seen_run_id != seen_run_id:
                seen_unchanged.append(row.id)  # it exists at the provider: not a deletion
            continue
        if item.deleted:
            if row.deleted_at is not None:
                changes.unchanged += 1
                continue
            next_seq += 1
            # The provider's last copy when it sends one (deletedAt, flags), else the stored one.
            data = item.data or row.data
            _change(row, data=data, digest=content_hash(data), updated_at=updated_at, now=now, action="deleted",
                    seq=next_seq)
            row.deleted_at = now
            changes.deleted.append(row)
        elif row.deleted_at is None and row.content_hash == digest:
            changes.unchanged += 1
            if seen_run_id is not None and row.last_seen_run_id != seen_run_id:
                seen_unchanged.append(row.id)
            continue
        else:
            next_seq += 1
            _change(row, data=item.data, digest=digest, updated_at=updated_at, now=now, action="updated",
                    seq=next_seq)
            row.deleted_at = None
            changes.updated.append(row)
        if seen_run_id is not None:
            row.last_seen_run_id = seen_run_id
    for start in range(0, len(seen_unchanged), _CHUNK):
        session.execute(sa.update(Record).where(Record.id.in_(seen_unchanged[start:start + _CHUNK]))
                        .values(last_seen_run_id=seen_run_id).execution_options(synchronize_session=False))
    session.flush()
    search_index.index_changes(session, tenant_id=tenant_id, integration_id=integration_id, entity=entity,
                               changes=changes)
    return changes


def tombstone_unseen(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, owner_key: str,
                     entity: str, run_id: uuid.UUID, now: datetime) -> Changes:
    """Tombstone every live record of this connection's `entity` that the full-refresh run `run_id` did not see.

    Call it only once that run has paged through everything successfully: a failed or partial
    run must never delete (issue 14, section 3). Returns the `Changes` (only `deleted`).
    """
    _take_sequence(session, integration_id=integration_id, count=0)  # the writers' lock first
    rows = list(session.exec(select(Record).where(
        Record.tenant_id == tenant_id, Record.integration_id == integration_id, Record.owner_key == owner_key,
        Record.entity == entity, Record.deleted_at.is_(None),
        sa.or_(Record.last_seen_run_id.is_(None), Record.last_seen_run_id != run_id))).all())
    changes = Changes()
    if not rows:
        return changes
    next_seq = _take_sequence(session, integration_id=integration_id, count=len(rows)) - len(rows)
    for row in rows:
        next_seq += 1
        _change(row, data=row.data, digest=row.content_hash, updated_at=None, now=now, action="deleted", seq=next_seq)
        row.deleted_at = now
        changes.deleted.append(row)
    session.flush()
    search_index.index_changes(session, tenant_id=tenant_id, integration_id=integration_id, entity=entity,
                               changes=changes)
    return changes


def get(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, record_id: uuid.UUID,
        owner_keys: Sequence[str] | None) -> Record:
    """Return one record of the integration, or raise NotFound.

    `owner_keys` limits it to those connections' records (a plain user passes only their own);
    None allows every owner (a tenant admin). Another tenant's, another integration's or
    another owner's record answers NotFound exactly like an unknown id.
    """
    stmt = select(Record).where(Record.tenant_id == tenant_id, Record.integration_id == integration_id,
                                Record.id == record_id)
    if owner_keys is not None:
        stmt = stmt.where(Record.owner_key.in_(list(owner_keys)))
    row = session.exec(stmt).first()
    if row is None:
        raise NotFound("record", record_id)
    return row


def find(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, owner_key: str, entity: str,
         external_id: str) -> Record | None:
    """Return the record of this connection's `entity` with the provider id `external_id`, or None."""
    return session.exec(select(Record).where(
        Record.tenant_id == tenant_id, Record.integration_id == integration_id, Record.owner_key == owner_key,
        Record.entity == entity, Record.external_id == external_id)).first()


def list_after(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
               owner_keys: Sequence[str] | None, entity: str | None, after_seq: int | None,
               modified_after: datetime | None, actions: Collection[str] | None,
               external_ids: Sequence[str] | None, limit: int) -> tuple[list[Record], bool]:
    """One page of the integration's records in modification order, strictly after `after_seq`.

    Filters: `owner_keys` (None: every owner), `entity`, `modified_after` (hub time),
    `actions` (subset of added|updated|deleted; None or empty: all), `external_ids` (provider
    ids). Returns `(rows, has_more)`; the next page starts after the last row's `seq`.
    """
    stmt = select(Record).where(Record.tenant_id == tenant_id, Record.integration_id == integration_id)
    if owner_keys is not None:
        keys = list(owner_keys)
        stmt = stmt.where(Record.owner_key == keys[0]) if len(keys) == 1 else stmt.where(Record.owner_key.in_(keys))
    if entity is not None:
        stmt = stmt.where(Record.entity == entity)
    if after_seq is not None:
        stmt = stmt.where(Record.seq > after_seq)
    if modified_after is not None:
        stmt = stmt.where(Record.last_modified_at > modified_after)
    if actions and set(actions) != set(ACTIONS):
        stmt = stmt.where(Record.last_action.in_(sorted(set(actions))))
    if external_ids:
        stmt = stmt.where(Record.external_id.in_(list(external_ids)))
    rows = list(session.exec(stmt.order_by(Record.seq).limit(limit + 1)).all())
    return rows[:limit], len(rows) > limit


def count(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, owner_key: str, entity: str) -> int:
    """How many live (not tombstoned) records this connection's `entity` holds."""
    return session.exec(select(sa.func.count()).select_from(Record).where(
        Record.tenant_id == tenant_id, Record.integration_id == integration_id, Record.owner_key == owner_key,
        Record.entity == entity, Record.deleted_at.is_(None))).one()


def record_view(row: Record) -> dict[str, Any]:
    """A record as the records API shows it (the contract's `Record`)."""
    return {
        "id": str(row.id),
        "externalId": row.external_id,
        "entity": row.entity,
        "data": row.data,
        "metadata": {
            "firstSeenAt": timestamp(row.first_seen_at),
            "lastModifiedAt": timestamp(row.last_modified_at),
            "lastAction": row.last_action,
            "deletedAt": timestamp(row.deleted_at),
            "providerUpdatedAt": timestamp(row.provider_updated_at),
        },
    }


def changed_event_data(*, integration_id: uuid.UUID, entity: str, trigger: str, run_id: uuid.UUID | None,
                       changes: Changes) -> dict[str, Any]:
    """The data of a `records.changed` event (contract: `RecordsChangedEvent`).

    `trigger` is schedule | manual | webhook | write; `run_id` the sync run (None outside a
    run). `recordIds` lists at most `EVENT_IDS_LIMIT` changed record ids; the counts are exact.
    """
    return {"integrationId": str(integration_id), "entity": entity, "trigger": trigger,
            "runId": str(run_id) if run_id is not None else None, **changes.counts(),
            "recordIds": [str(row.id) for row in changes.changed()[:EVENT_IDS_LIMIT]]}


def _older(candidate: datetime | None, stored: datetime | None) -> bool:
    # Only two known times compare: a copy without a time cannot be proven stale.
    return candidate is not None and stored is not None and as_utc(candidate) < as_utc(stored)


def _change(row: Record, *, data: dict, digest: str, updated_at: datetime | None, now: datetime, action: str,
            seq: int) -> None:
    row.data = data
    row.content_hash = digest
    if updated_at is not None:
        row.provider_updated_at = updated_at
    row.last_modified_at = now
    row.last_action = action
    row.seq = seq


def _stored(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, owner_key: str, entity: str,
            external_ids: list[str]) -> dict[str, Record]:
    found: dict[str, Record] = {}
    for start in range(0, len(external_ids), _CHUNK):
        rows = session.exec(select(Record).where(
            Record.tenant_id == tenant_id, Record.integration_id == integration_id, Record.owner_key == owner_key,
            Record.entity == entity, Record.external_id.in_(external_ids[start:start + _CHUNK]))).all()
        found.update((row.external_id, row) for row in rows)
    return found


def _take_sequence(session: Session, *, integration_id: uuid.UUID, count: int) -> int:
    """Lock the integration's sequence row (creating it), advance it by `count`; return the new value."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(RecordSequence).values(integration_id=integration_id, value=0)
                    .on_conflict_do_nothing(index_elements=["integration_id"]))
    return session.execute(sa.update(RecordSequence).where(RecordSequence.integration_id == integration_id)
                           .values(value=RecordSequence.value + count).returning(RecordSequence.value)).scalar_one()


def reader_owner_keys(integration: Integration, *, role: str, user_id: uuid.UUID | None,
                      requested_user_id: uuid.UUID | None = None) -> list[str] | None:
    """Whose records of `integration` a caller may read (records API, search, widgets share this rule).

    A tenant admin reads every owner's records (None), or one user's when `requested_user_id`
    is given. A plain user reaches only user-scoped integrations, and there only the records of
    their own connection; a tenant-level integration answers NotFound to them (as an unknown id
    would), and asking for another user's records raises PermissionDenied. Seed: the integration
    API's "Permission Checks" (user scoping check).
    """
    if role == "tenant_admin":
        return None if requested_user_id is None else [owner_key(requested_user_id)]
    if not integration.user_scoped:
        raise NotFound("integration", integration.id, code="INTEGRATION_NOT_FOUND")
    if requested_user_id is not None and requested_user_id != user_id:
        raise PermissionDenied("A user reads only the records of their own connection",
                               details={"field": "userId"})
    return [owner_key(user_id)]


MAX_DATA_FILTERS = 10
_FILTER_FIELD = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,4}$")


def data_filter_clauses(filters: Mapping[str, Any]) -> list[Any]:
    """SQL clauses keeping the records whose `data` has each field equal to the given value.

    `filters` maps a field (a dotted path of at most 5 names: `address.city`) to a string,
    number, boolean or null; at most `MAX_DATA_FILTERS`. Raises InvalidInput (field `filters`)
    for anything else (nested objects or arrays as values, bad field names): the widgets' and
    search's `filters`/`customFilters` share this check. The same filters select the same rows
    on SQLite (`json_extract`) and PostgreSQL (`->>`).
    """
    if not isinstance(filters, Mapping):
        raise InvalidInput("filters must be a JSON object of field equalities", details={"field": "filters"})
    if len(filters) > MAX_DATA_FILTERS:
        raise InvalidInput(f"At most {MAX_DATA_FILTERS} filters", details={"field": "filters"})
    clauses = []
    for name, value in filters.items():
        if not isinstance(name, str) or not _FILTER_FIELD.match(name):
            raise InvalidInput("A filter field is a dotted path of letters, digits, '_' and '-' (at most 5 names)",
                               details={"field": "filters"})
        path = tuple(name.split("."))
        element = Record.data[path] if len(path) > 1 else Record.data[name]
        if value is None:
            clauses.append(sa.or_(element.as_string().is_(None), element.as_string() == "null"))
        elif isinstance(value, bool):
            clauses.append(element.as_boolean() == value)
        elif isinstance(value, (int, float)):
            clauses.append(element.as_float() == float(value))
        elif isinstance(value, str) and len(value) <= 1000 and "\x00" not in value:
            clauses.append(element.as_string() == value)
        else:
            raise InvalidInput(f"filters.{name}: a filter value is a string (at most 1000 characters), a number, "
                               "a boolean or null", details={"field": "filters"})
    return clauses
