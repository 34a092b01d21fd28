"""The records store (persistence/records.py): last-write-wins, unchanged copies, tombstones, the seq order."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

from sqlmodel import select

from persistence import records
from persistence.db import transaction
from persistence.models import Record, utcnow
from persistence.records import Item

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


class Store:
    """One integration's records of one owner, written and read in their own transactions."""

    def __init__(self, owner_key: str = "tenant") -> None:
        self.tenant_id = uuid.uuid4()
        self.integration_id = uuid.uuid4()
        self.owner_key = owner_key

    def upsert(self, *items: Item, entity: str = "Contact", run_id: uuid.UUID | None = None) -> records.Changes:
        with transaction() as session:
            return records.upsert(session, tenant_id=self.tenant_id, integration_id=self.integration_id,
                                  owner_key=self.owner_key, user_id=None, entity=entity, items=items,
                                  now=utcnow(), seen_run_id=run_id)

    def rows(self) -> dict[str, Record]:
        with transaction() as session:
            found = session.exec(select(Record).where(Record.integration_id == self.integration_id)).all()
            return {row.external_id: row for row in found}

    def page(self, after_seq: int | None = None, **filters) -> tuple[list[Record], bool]:
        options = {"owner_keys": None, "entity": None, "modified_after": None, "actions": None,
                   "external_ids": None, "limit": 100, **filters}
        with transaction() as session:
            return records.list_after(session, tenant_id=self.tenant_id, integration_id=self.integration_id,
                                      after_seq=after_seq, **options)


def item(external_id: str, minutes: int | None, **data) -> Item:
    updated = T0 + timedelta(minutes=minutes) if minutes is not None else None
    return Item(external_id=external_id, data={"id": external_id, **data}, provider_updated_at=updated)


def test_new_copies_are_added_and_an_unchanged_copy_writes_nothing(client):
    store = Store()
    changes = store.upsert(item("c1", 0, email="a@x"), item("c2", 0, email="b@x"))
    assert changes.counts() == {"added": 2, "updated": 0, "deleted": 0}
    before = store.rows()
    again = store.upsert(item("c1", 0, email="a@x"), item("c2", 5, email="b@x"))
    assert again.counts() == {"added": 0, "updated": 0, "deleted": 0} and again.unchanged == 2
    after = store.rows()
    assert {key: (row.seq, row.last_modified_at, row.last_action) for key, row in after.items()} == \
        {key: (row.seq, row.last_modified_at, row.last_action) for key, row in before.items()}


def test_last_write_wins_by_the_providers_time_and_a_stale_copy_writes_nothing(client):
    store = Store()
    store.upsert(item("c1", 10, email="new@x"))
    stale = store.upsert(item("c1", 5, email="old@x"))
    assert stale.stale == 1 and stale.counts() == {"added": 0, "updated": 0, "deleted": 0}
    assert store.rows()["c1"].data == {"id": "c1", "email": "new@x"}
    newer = store.upsert(item("c1", 11, email="newer@x"))
    assert [row.external_id for row in newer.updated] == ["c1"]
    row = store.rows()["c1"]
    assert (row.data["email"], row.last_action, row.provider_updated_at.replace(tzinfo=timezone.utc)) == \
        ("newer@x", "updated", T0 + timedelta(minutes=11))


def test_two_copies_in_one_batch_keep_the_newer(client):
    store = Store()
    changes = store.upsert(item("c1", 7, email="seven@x"), item("c1", 3, email="three@x"))
    assert changes.counts() == {"added": 1, "updated": 0, "deleted": 0}
    assert store.rows()["c1"].data["email"] == "seven@x"


def test_a_deleted_copy_tombstones_and_a_newer_live_copy_brings_it_back(client):
    store = Store()
    store.upsert(item("c1", 0, email="a@x"))
    gone = Item("c1", {"id": "c1", "deleted": True}, T0 + timedelta(minutes=1), deleted=True)
    assert store.upsert(gone).counts() == {"added": 0, "updated": 0, "deleted": 1}
    row = store.rows()["c1"]
    assert row.deleted_at is not None and row.last_action == "deleted" and row.data == {"id": "c1", "deleted": True}
    assert store.upsert(gone).unchanged == 1  # deleting twice changes nothing
    assert store.upsert(item("c1", 0, email="a@x")).stale == 1  # the old live copy cannot resurrect it
    back = store.upsert(item("c1", 2, email="back@x"))
    assert back.counts() == {"added": 0, "updated": 1, "deleted": 0}
    row = store.rows()["c1"]
    assert (row.deleted_at, row.last_action, row.data["email"]) == (None, "updated", "back@x")
    never_seen = Item("c9", {"id": "c9"}, T0, deleted=True)
    assert store.upsert(never_seen).unchanged == 1 and "c9" not in store.rows()


def test_tombstone_unseen_deletes_only_what_the_full_run_did_not_see(client):
    store = Store()
    store.upsert(item("c1", 0), item("c2", 0), item("c3", 0))
    run_id = uuid.uuid4()
    store.upsert(item("c1", 0), item("c2", 1, changed=True), run_id=run_id)  # c1 unchanged, c2 updated, c3 unseen
    with transaction() as session:
        changes = records.tombstone_unseen(session, tenant_id=store.tenant_id, integration_id=store.integration_id,
                                           owner_key="tenant", entity="Contact", run_id=run_id, now=utcnow())
    assert [row.external_id for row in changes.deleted] == ["c3"]
    rows = store.rows()
    assert {key: row.deleted_at is not None for key, row in rows.items()} == {"c1": False, "c2": False, "c3": True}
    with transaction() as session:
        assert records.count(session, tenant_id=store.tenant_id, integration_id=store.integration_id,
                             owner_key="tenant", entity="Contact") == 2


def test_the_list_walks_changes_in_seq_order_and_filters(client):
    store = Store()
    store.upsert(item("a1", 0), entity="Account")
    store.upsert(item("c1", 0), item("c2", 0))
    store.upsert(item("c1", 1, changed=True))
    rows, more = store.page()
    assert [row.external_id for row in rows] == ["a1", "c2", "c1"] and not more
    assert [row.seq for row in rows] == sorted(row.seq for row in rows)
    first, more = store.page(limit=2)
    assert more and [row.external_id for row in first] == ["a1", "c2"]
    rest, more = store.page(after_seq=first[-1].seq, limit=2)
    assert [row.external_id for row in rest] == ["c1"] and not more
    assert [row.external_id for row in store.page(entity="Contact")[0]] == ["c2", "c1"]
    assert [row.external_id for row in store.page(actions={"updated"})[0]] == ["c1"]
    assert [row.external_id for row in store.page(external_ids=["a1", "zz"])[0]] == ["a1"]
    assert store.page(owner_keys=["someone-else"])[0] == []
    other = Store()
    other.integration_id = store.integration_id  # same integration id, another tenant: nothing leaks
    assert other.page()[0] == []
    with transaction() as session:
        view = records.record_view(rows[2])
        assert view == {"id": str(rows[2].id), "externalId": "c1", "entity": "Contact",
                        "data": {"id": "c1", "changed": True},
                        "metadata": {"firstSeenAt": view["metadata"]["firstSeenAt"],
                                     "lastModifiedAt": view["metadata"]["lastModifiedAt"], "lastAction": "updated",
                                     "deletedAt": None, "providerUpdatedAt": "2026-11-01T12:01:00.000000Z"}}
        assert records.get(session, tenant_id=store.tenant_id, integration_id=store.integration_id,
                           record_id=rows[2].id, owner_keys=None).external_id == "c1"


def test_a_reader_walking_the_cursor_while_writers_commit_never_misses_a_change(client):
    """Concurrent writers of one integration: every change is seen by a reader walking `seq`."""
    store = Store()
    writers = 3
    per_writer = 20

    def write(writer: int) -> None:
        for n in range(per_writer):
            store.upsert(item(f"w{writer}-{n}", n))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    seen: set[str] = set()
    cursor: int | None = None
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        rows, _ = store.page(after_seq=cursor, limit=7)
        for row in rows:
            seen.add(row.external_id)
            cursor = row.seq
    for thread in threads:
        thread.join()
    while True:
        rows, more = store.page(after_seq=cursor, limit=7)
        for row in rows:
            seen.add(row.external_id)
            cursor = row.seq
        if not more:
            break
    assert seen == {f"w{w}-{n}" for w in range(writers) for n in range(per_writer)}
    seqs = [row.seq for row in store.rows().values()]
    assert len(set(seqs)) == len(seqs)


def test_who_reads_whose_records():
    """Tenant admins read every owner (or one user); a user only their own connection of a user-scoped integration."""
    import pytest

    from persistence.errors import NotFound, PermissionDenied
    from persistence.models import Integration

    me, other = uuid.uuid4(), uuid.uuid4()
    shared = Integration(tenant_id=uuid.uuid4(), provider_id=uuid.uuid4(), name="CRM", user_scoped=False)
    personal = Integration(tenant_id=shared.tenant_id, provider_id=uuid.uuid4(), name="Mail", user_scoped=True)
    assert records.reader_owner_keys(shared, role="tenant_admin", user_id=me) is None
    assert records.reader_owner_keys(personal, role="tenant_admin", user_id=me, requested_user_id=other) == [str(other)]
    assert records.reader_owner_keys(personal, role="user", user_id=me) == [str(me)]
    assert records.reader_owner_keys(personal, role="user", user_id=me, requested_user_id=me) == [str(me)]
    with pytest.raises(PermissionDenied):
        records.reader_owner_keys(personal, role="user", user_id=me, requested_user_id=other)
    with pytest.raises(NotFound):
        records.reader_owner_keys(shared, role="user", user_id=me)


def test_data_filters_select_the_same_rows_on_both_databases(client):
    import pytest

    from persistence.errors import InvalidInput

    store = Store()
    store.upsert(
        Item("p1", {"name": "Ada", "age": 36, "vip": True, "city": None, "address": {"city": "London"}}, T0),
        Item("p2", {"name": "Grace", "age": 85, "vip": False, "address": {"city": "New York"}}, T0),
        Item("p3", {"name": "Ada", "age": 36.0, "vip": False, "city": "Paris"}, T0),
    )

    def ids(filters: dict) -> list[str]:
        with transaction() as session:
            rows = session.exec(select(Record).where(Record.integration_id == store.integration_id,
                                                     *records.data_filter_clauses(filters))
                                .order_by(Record.external_id)).all()
            return [row.external_id for row in rows]

    assert ids({"name": "Ada"}) == ["p1", "p3"]
    assert ids({"name": "Ada", "vip": True}) == ["p1"]
    assert ids({"vip": False}) == ["p2", "p3"]
    assert ids({"age": 36}) == ["p1", "p3"]
    assert ids({"address.city": "London"}) == ["p1"]
    assert ids({"city": None}) == ["p1", "p2"]
    assert ids({"name": "Nobody"}) == []
    for bad in ({"name": {"$ne": 1}}, {"name": [1]}, {"bad field": 1}, {"a.b.c.d.e.f": 1},
                {f"f{n}": 1 for n in range(11)}, ["name"], {"name": "x" * 1001}):
        with pytest.raises(InvalidInput):
            records.data_filter_clauses(bad)
