"""Incoming provider webhooks: integrations' secrets, the replay guard and the outbox of the work.

Seeds: the integrations document ("Incoming Webhooks"), the PrintShop guide (idempotent webhook
handlers). A verified notification becomes one `incoming_webhooks` row in the request's
transaction (`accept`); the row is unique per integration and provider event id, so a replay
within the 7 days the rows are kept is recognised and acknowledged without effect. The worker
(`server/incoming_worker.py`) claims queued rows with a lease (`claim_due`: `FOR UPDATE SKIP
LOCKED` on PostgreSQL), reads and upserts the record, and settles the row (`settle`).

Wake-up: a commit that queued a row calls the listeners of `add_commit_listener` in the
committing process, and on PostgreSQL notifies channel `hub_incoming` for other processes.
Queries never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from persistence import vault, webhook_verification
from persistence.errors import InvalidInput, NotFound
from persistence.models import IncomingWebhook, Integration, Provider, utcnow
from persistence.webhook_verification import Declaration

RETENTION = timedelta(days=7)
NOTIFY_CHANNEL = "hub_incoming"
MAX_ATTEMPTS = 5
_PENDING_KEY = "hub_incoming_queued"  # Session.info key: this transaction queued incoming work
_commit_listeners: list[Callable[[], None]] = []


@dataclass(frozen=True)
class Target:
    """What a notification to one integration is checked against: its tenant, declaration and secret."""

    tenant_id: uuid.UUID
    integration_id: uuid.UUID
    declaration: Declaration
    secret: str


@dataclass(frozen=True)
class Job:
    """One claimed row: the notification's integration, entity, record id, its record when carried, attempt number."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    integration_id: uuid.UUID
    provider_event_id: str
    entity: str
    external_id: str
    record: dict | None
    attempt: int


def secret_binding(integration: Integration) -> str:
    """The vault binding of an integration's incoming-webhook secret (tenant and row)."""
    return f"integration-webhook:{integration.tenant_id}:{integration.id}"


def target(session: Session, *, integration_id: uuid.UUID) -> Target:
    """Return what verifies notifications to the integration; NotFound alike when it is unknown,
    disabled, of a provider without `webhookVerification`, or has no secret (nothing is leaked)."""
    found = session.exec(select(Integration, Provider).join(Provider, Provider.id == Integration.provider_id)
                         .where(Integration.id == integration_id)).first()
    declaration = webhook_verification.parse(found[1].webhook_verification) if found else None
    if found is None or found[0].status == "disabled" or found[0].webhook_secret is None or declaration is None:
        raise NotFound("integration", integration_id, code="INTEGRATION_NOT_FOUND")
    integration = found[0]
    return Target(integration.tenant_id, integration.id, declaration,
                  vault.open_sealed(integration.webhook_secret, binding=secret_binding(integration)))


def scheme_of(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> str:
    """Return the verification scheme of the tenant's integration's provider.

    NotFound(INTEGRATION_NOT_FOUND) for an unknown or another tenant's integration;
    InvalidInput when its provider declares no `webhookVerification` (it sends no webhooks).
    """
    found = session.exec(select(Integration.id, Provider.webhook_verification)
                         .join(Integration, Integration.provider_id == Provider.id)
                         .where(Integration.tenant_id == tenant_id, Integration.id == integration_id)).first()
    if found is None:
        raise NotFound("integration", integration_id, code="INTEGRATION_NOT_FOUND")
    if not found[1]:
        raise InvalidInput("The integration's provider declares no webhookVerification: it sends no webhooks")
    return found[1]["scheme"]


def set_secret(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, secret: str, now: datetime) -> Integration:
    """Store `secret` sealed on the tenant's integration (replacing any) and return the integration."""
    row = session.exec(select(Integration).where(Integration.tenant_id == tenant_id,
                                                 Integration.id == integration_id)).first()
    if row is None:
        raise NotFound("integration", integration_id, code="INTEGRATION_NOT_FOUND")
    row.webhook_secret = vault.seal(secret, binding=secret_binding(row))
    row.updated_at = now
    session.add(row)
    session.flush()
    return row


def reseal_secrets(session: Session) -> int:
    """Re-seal every integration's incoming-webhook secret under the newest vault key; return how many changed."""
    changed = 0
    for row in session.exec(select(Integration).where(Integration.webhook_secret.is_not(None)).with_for_update()).all():
        if vault.needs_rotation(row.webhook_secret):
            row.webhook_secret = vault.seal(vault.open_sealed(row.webhook_secret, binding=secret_binding(row)),
                                            binding=secret_binding(row))
            session.add(row)
            changed += 1
    return changed


def accept(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, event_id: str,
           entity: str | None, external_id: str | None, record: dict | None, now: datetime) -> str:
    """Record a verified notification; return `queued`, `ignored` (no entity) or `duplicate` (seen within 7 days).

    A duplicate writes nothing. A row older than the retention no longer guards: it is replaced
    by the new one (the provider's event ids may be reused after that). Never commits.
    """
    existing = session.exec(select(IncomingWebhook).where(IncomingWebhook.integration_id == integration_id,
                                                          IncomingWebhook.provider_event_id == event_id)).first()
    if existing is not None:
        if existing.received_at is not None and _aware(existing.received_at) > now - RETENTION:
            return "duplicate"
        session.delete(existing)
        session.flush()
    status = "queued" if entity is not None else "ignored"
    values = dict(id=uuid.uuid4(), tenant_id=tenant_id, integration_id=integration_id, provider_event_id=event_id,
                  status=status, entity=entity, external_id=external_id, record=record, attempts=0, received_at=now,
                  next_attempt_at=now if status == "queued" else None,
                  finished_at=None if status == "queued" else now)
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(IncomingWebhook)
    # A concurrent copy of the same event loses on the unique key without failing the transaction.
    inserted = session.execute(insert.values(**values).on_conflict_do_nothing(
        index_elements=["integration_id", "provider_event_id"])).rowcount
    if not inserted:
        return "duplicate"
    if status == "queued":
        _note_for_commit(session)
    return status


def claim_due(session: Session, *, worker: str, now: datetime, lease: timedelta, limit: int) -> list[Job]:
    """Claim up to `limit` due queued rows for `worker` until `now + lease`; return them, oldest due first."""
    if limit <= 0:
        return []
    due = (select(IncomingWebhook.id)
           .where(IncomingWebhook.status == "queued", IncomingWebhook.next_attempt_at <= now,
                  sa.or_(IncomingWebhook.claimed_until.is_(None), IncomingWebhook.claimed_until < now))
           .order_by(IncomingWebhook.next_attempt_at).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claimed = session.execute(
        sa.update(IncomingWebhook).where(IncomingWebhook.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + lease, claimed_by=worker, attempts=IncomingWebhook.attempts + 1)
        .returning(IncomingWebhook.id, IncomingWebhook.tenant_id, IncomingWebhook.integration_id,
                   IncomingWebhook.provider_event_id, IncomingWebhook.entity, IncomingWebhook.external_id,
                   IncomingWebhook.record, IncomingWebhook.attempts)
        .execution_options(synchronize_session=False)).all()
    return [Job(id=row.id, tenant_id=row.tenant_id, integration_id=row.integration_id,
                provider_event_id=row.provider_event_id, entity=row.entity, external_id=row.external_id,
                record=row.record, attempt=row.attempts) for row in claimed]


def settle(session: Session, *, job: Job, worker: str, now: datetime, error: str | None,
           retry_at: datetime | None = None) -> str:
    """Record a job's outcome and return the row's status: done, queued again at `retry_at`, or failed.

    `error` None means done. With an error the row is retried at `retry_at` until it has had
    MAX_ATTEMPTS attempts (or when `retry_at` is None), then it is failed. Only `worker`'s
    claim is settled: a claim that ran out and was taken by another worker is left to it.
    """
    if error is None:
        status, next_at = "done", None
    elif retry_at is not None and job.attempt < MAX_ATTEMPTS:
        status, next_at = "queued", retry_at
    else:
        status, next_at = "failed", None
    session.execute(sa.update(IncomingWebhook)
                    .where(IncomingWebhook.id == job.id, IncomingWebhook.claimed_by == worker)
                    .values(status=status, next_attempt_at=next_at, claimed_until=None, claimed_by=None,
                            last_error=error[:500] if error else None,
                            finished_at=None if status == "queued" else now)
                    .execution_options(synchronize_session=False))
    return status


def release(session: Session, *, worker: str, ids: list[uuid.UUID]) -> None:
    """Give back claims `worker` will not finish (a clean shutdown), so others take them at once."""
    if ids:
        session.execute(sa.update(IncomingWebhook)
                        .where(IncomingWebhook.id.in_(ids), IncomingWebhook.claimed_by == worker)
                        .values(claimed_until=None, claimed_by=None, attempts=IncomingWebhook.attempts - 1)
                        .execution_options(synchronize_session=False))


def prune(session: Session, *, now: datetime, batch: int = 1000) -> int:
    """Delete settled rows received more than 7 days before `now`, in batches; return how many.

    Queued rows are kept whatever their age: they are work not yet done.
    """
    deleted = 0
    while True:
        ids = select(IncomingWebhook.id).where(IncomingWebhook.received_at < now - RETENTION,
                                               IncomingWebhook.status != "queued").limit(batch)
        count = session.execute(sa.delete(IncomingWebhook).where(IncomingWebhook.id.in_(ids.scalar_subquery()))
                                .execution_options(synchronize_session=False)).rowcount
        deleted += count
        if count < batch:
            return deleted


def add_commit_listener(listener: Callable[[], None]) -> None:
    """Call `listener()` after each commit that queued incoming work (in the committing thread).

    How an in-process worker is woken at once; it must be quick and never raise (exceptions
    are swallowed). Adding the same listener twice has no effect.
    """
    if listener not in _commit_listeners:
        _commit_listeners.append(listener)


def remove_commit_listener(listener: Callable[[], None]) -> None:
    """Stop calling `listener` after commits (no error when it was not added)."""
    if listener in _commit_listeners:
        _commit_listeners.remove(listener)


def _note_for_commit(session: Session) -> None:
    if not session.info.get(_PENDING_KEY):
        session.info[_PENDING_KEY] = True
        if session.get_bind().dialect.name == "postgresql":
            # Delivered at commit only (PostgreSQL NOTIFY is transactional): wakes other processes' workers.
            session.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))


@sa_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(_PENDING_KEY, False):
        return
    for listener in list(_commit_listeners):  # a copy: a worker may stop listening meanwhile
        try:
            listener()
        except Exception:  # noqa: BLE001 - a listener's fault must not fail a committed request
            pass


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)
