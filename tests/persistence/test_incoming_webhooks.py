"""persistence.incoming_webhooks: the replay guard's 7 days, the outbox's claims and retries, pruning."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlmodel import select

from persistence import incoming_webhooks
from persistence.db import transaction
from persistence.models import IncomingWebhook, utcnow

LEASE = timedelta(seconds=30)


@pytest.fixture
def integration_id(app) -> uuid.UUID:
    # The rows name an integration without a foreign key: a fresh id isolates each test.
    return uuid.uuid4()


def accept(integration_id: uuid.UUID, event_id: str, *, now, entity: str | None = "Contact") -> str:
    with transaction() as session:
        return incoming_webhooks.accept(session, tenant_id=uuid.uuid4(), integration_id=integration_id,
                                        event_id=event_id, entity=entity, external_id="c1" if entity else None,
                                        record=None, now=now)


def rows(integration_id: uuid.UUID) -> list[IncomingWebhook]:
    with transaction() as session:
        return list(session.exec(select(IncomingWebhook).where(IncomingWebhook.integration_id == integration_id)
                                 .order_by(IncomingWebhook.received_at)).all())


def claim(integration_id: uuid.UUID, *, now, worker: str = "w1") -> list[incoming_webhooks.Job]:
    with transaction() as session:
        jobs = incoming_webhooks.claim_due(session, worker=worker, now=now, lease=LEASE, limit=1000)
    return [job for job in jobs if job.integration_id == integration_id]


class TestReplayGuard:
    def test_an_event_id_counts_once_per_integration(self, integration_id):
        now = utcnow()

        assert [accept(integration_id, "e1", now=now), accept(integration_id, "e1", now=now + timedelta(days=6)),
                accept(uuid.uuid4(), "e1", now=now)] == ["queued", "duplicate", "queued"]
        assert len(rows(integration_id)) == 1

    def test_after_seven_days_the_id_is_new_again(self, integration_id):
        now = utcnow()
        accept(integration_id, "e1", now=now - timedelta(days=7, seconds=1), entity=None)

        assert accept(integration_id, "e1", now=now) == "queued"
        assert [(row.status, row.received_at is not None) for row in rows(integration_id)] == [("queued", True)]

    def test_no_entity_is_kept_as_ignored(self, integration_id):
        assert accept(integration_id, "e1", now=utcnow(), entity=None) == "ignored"
        assert claim(integration_id, now=utcnow()) == []


class TestClaims:
    def test_a_claimed_row_is_not_claimed_again_until_its_lease_ends(self, integration_id):
        now = utcnow()
        accept(integration_id, "e1", now=now)

        first = claim(integration_id, now=now)
        assert claim(integration_id, now=now + LEASE - timedelta(seconds=1), worker="w2") == []
        again = claim(integration_id, now=now + LEASE + timedelta(seconds=1), worker="w2")

        assert [(job.provider_event_id, job.attempt) for job in first] == [("e1", 1)]
        assert [job.attempt for job in again] == [2]

    def test_errors_retry_then_fail(self, integration_id):
        now = utcnow()
        accept(integration_id, "e1", now=now)
        statuses = []
        for attempt in range(incoming_webhooks.MAX_ATTEMPTS):
            moment = now + timedelta(minutes=attempt)
            (job,) = claim(integration_id, now=moment)
            with transaction() as session:
                statuses.append(incoming_webhooks.settle(session, job=job, worker="w1", now=moment, error="503",
                                                         retry_at=moment + timedelta(seconds=1)))

        assert statuses == ["queued"] * (incoming_webhooks.MAX_ATTEMPTS - 1) + ["failed"]
        assert [(row.status, row.attempts, row.last_error) for row in rows(integration_id)] == [
            ("failed", incoming_webhooks.MAX_ATTEMPTS, "503")]

    def test_another_workers_claim_is_not_settled(self, integration_id):
        now = utcnow()
        accept(integration_id, "e1", now=now)
        (stale,) = claim(integration_id, now=now)
        claim(integration_id, now=now + LEASE * 2, worker="w2")

        with transaction() as session:
            incoming_webhooks.settle(session, job=stale, worker="w1", now=now, error=None)

        assert [(row.status, row.claimed_by) for row in rows(integration_id)] == [("queued", "w2")]


class TestPrune:
    def test_settled_rows_older_than_seven_days_go_queued_ones_stay(self, integration_id):
        now = utcnow()
        old = now - timedelta(days=8)
        accept(integration_id, "old-ignored", now=old, entity=None)
        accept(integration_id, "old-queued", now=old)
        accept(integration_id, "recent-ignored", now=now - timedelta(days=6), entity=None)

        with transaction() as session:
            deleted = incoming_webhooks.prune(session, now=now)

        assert deleted >= 1
        assert sorted(row.provider_event_id for row in rows(integration_id)) == ["old-queued", "recent-ignored"]
