"""The event log (persistence/events.py): one call writes the audit entry and the event together."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlmodel import select

from persistence import db
from persistence import events as event_log
from persistence.db import transaction
from persistence.models import AuditEntry, Event, utcnow
from tests.assertions import assert_error
from tests.factories import create_provider, enable_integration
from tests.handlers.test_events import EVENTS, events_of, make_events


def test_a_change_writes_its_audit_entry_and_its_event_in_one_transaction(client, super_admin, tenant_admin):
    provider = create_provider(client, super_admin)
    created = enable_integration(client, tenant_admin, provider["id"])
    tenant_id = uuid.UUID(tenant_admin.tenant_id)
    with db.transaction() as session:
        event = session.exec(select(Event).where(Event.tenant_id == tenant_id)).one()
        entry = session.exec(select(AuditEntry).where(AuditEntry.tenant_id == tenant_id,
                                                      AuditEntry.action == "integration.create")).one()
    assert event.id.startswith("evt_") and len(event.id) == 30
    assert event.type == "integration.created"
    assert event.data == created
    assert event.request_id == entry.request_id
    assert event.actor == {"type": "user", "id": tenant_admin.user_id, "role": "tenant_admin"}



def test_prune_deletes_only_events_past_the_retention_in_bounded_batches(client, tenant_admin, settings):
    from server.cli import events_prune

    ids = make_events(client, tenant_admin, 5)
    old = utcnow() - timedelta(days=settings.event_retention_days, minutes=1)
    with transaction() as session:
        for event_id in ids[:3]:
            row = session.exec(select(Event).where(Event.id == event_id)).one()
            row.occurred_at = old
            session.add(row)
    with transaction() as session:
        # Two of the three old ones (a bounded batch), nothing newer than the cut-off.
        assert event_log.prune(session, older_than=utcnow() - timedelta(days=settings.event_retention_days),
                               batch=2) == 2
    assert events_prune(settings) == 1  # the CLI finishes the job

    assert [event["id"] for event in events_of(client, tenant_admin)] == ids[3:]
    response = client.get(EVENTS, params={"after": ids[0]}, headers=tenant_admin.headers)
    assert_error(response, 400, "VALIDATION_ERROR", details={"field": "after"})
    with transaction() as session:
        assert event_log.prune(session, older_than=utcnow() - timedelta(days=settings.event_retention_days)) == 0


def test_a_pruned_log_never_hands_out_a_seq_again(db_kind):
    """SQLite reuses the highest rowid once it is deleted unless the table says AUTOINCREMENT;
    PostgreSQL's identity never goes back. Resume cursors rely on it."""
    import sqlalchemy as sa

    with db.engine().connect() as conn:
        if db_kind == "sqlite":
            ddl = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'events'")).scalar_one()
            assert "AUTOINCREMENT" in ddl
        else:
            kind = conn.execute(sa.text("SELECT is_identity, column_default FROM information_schema.columns "
                                        "WHERE table_name = 'events' AND column_name = 'seq'")).one()
            assert kind.is_identity == "YES" or (kind.column_default or "").startswith("nextval(")
