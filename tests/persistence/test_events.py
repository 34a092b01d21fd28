"""The event log (persistence/events.py): one call writes the audit entry and the event together."""

from __future__ import annotations

import uuid

from sqlmodel import select

from persistence import db
from persistence.models import AuditEntry, Event
from tests.factories import create_provider, enable_integration


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
