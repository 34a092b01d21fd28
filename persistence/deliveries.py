"""The webhook delivery outbox: claiming due deliveries, recording attempts, replay, backlog.

Svix's delivery model over the rows `persistence.webhooks.enqueue_deliveries` writes. A worker
claims due rows with a lease (`claimed_until`): on PostgreSQL `FOR UPDATE SKIP LOCKED`, so any
number of workers share them without waiting on each other; on SQLite the claiming UPDATE is
one statement under the database's single writer lock, so one claimant at a time. A claimant
that dies leaves its rows to be claimed again when the lease runs out (at-least-once).
No HTTP; never commits.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import events, webhooks
from persistence.audit import Actor
from persistence.errors import Conflict, InvalidInput
from persistence.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WorkerHeartbeat, as_utc
from persistence.pages import After, Page, paginate_after

RESPONSE_BODY_LIMIT = 8 * 1024
DISABLE_AFTER = timedelta(days=5)
RECOVER_LIMIT = 10_000
JITTER = 0.2


@dataclass(frozen=True)
class Job:
    """One claimed delivery, ready to send: where, what (the exact body) and with which secrets."""

    delivery_id: uuid.UUID
    tenant_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    event_type: str
    url: str
    secrets: tuple[str, ...]
    body: str
    attempt_number: int
    trigger: str


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt of a job gave: status, first 8 KiB of body, duration (ms), error kind.

    `error_kind` is None on success, else timeout, connect_error, ssrf_refused, http_status or
    tls; `retry_after` the seconds a 429/503 asked to wait (None otherwise).
    """

    job: Job
    response_status: int | None = None
    response_body: str | None = None
    duration_ms: float = 0.0
    error_kind: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        """True for a 2xx answer."""
        return self.error_kind is None and self.response_status is not None and 200 <= self.response_status < 300


def message_body(event: Event) -> str:
    """The delivery body of `event` (a row or any object with `type`, `occurred_at`, `data`):
    `{"type", "timestamp", "data"}` as compact JSON (what is signed)."""
    return json.dumps({"type": event.type, "timestamp": webhooks.timestamp(event.occurred_at), "data": event.data},
                      separators=(",", ":"), ensure_ascii=False)


def claim_due(session: Session, *, worker: str, now: datetime, lease: timedelta, limit: int) -> list[Job]:
    """Claim up to `limit` due deliveries for `worker` until `now + lease`; return them as jobs, oldest due first.

    A delivery whose endpoint is gone or disabled, or whose event was pruned, is settled
    (cancelled or failed) instead of being returned.
    """
    if limit <= 0:
        return []
    due = (select(WebhookDelivery.id)
           .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                  sa.or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now))
           .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    # Core statements and column rows, not ORM objects: nothing here is changed through the
    # session, and building entities was a third of the claim's CPU.
    table = WebhookDelivery.__table__
    claimed = session.execute(
        sa.update(table).where(table.c.id.in_(due.scalar_subquery()))
        .values(claimed_until=now + lease, claimed_by=worker)
        .returning(table.c.id, table.c.tenant_id, table.c.endpoint_id, table.c.event_id, table.c.attempt_count,
                   table.c.trigger)).all()
    if not claimed:
        return []
    endpoints = {row.id: row for row in session.execute(sa.select(
        WebhookEndpoint.id, WebhookEndpoint.tenant_id, WebhookEndpoint.url, WebhookEndpoint.enabled,
        WebhookEndpoint.secret, WebhookEndpoint.previous_secret, WebhookEndpoint.previous_secret_expires_at,
    ).where(WebhookEndpoint.id.in_({c.endpoint_id for c in claimed})))}
    found = {row.id: row for row in session.execute(sa.select(Event.id, Event.type, Event.occurred_at, Event.data)
                                                    .where(Event.id.in_({c.event_id for c in claimed})))}
    jobs, secrets, gone = [], {}, []
    for c in claimed:
        endpoint, event = endpoints.get(c.endpoint_id), found.get(c.event_id)
        if endpoint is None or event is None or not endpoint.enabled:
            gone.append((c.id, "failed" if endpoint is not None and event is not None else "cancelled"))
            continue
        if endpoint.id not in secrets:
            secrets[endpoint.id] = tuple(webhooks.signing_secrets(endpoint, now=now))
        jobs.append(Job(delivery_id=c.id, tenant_id=c.tenant_id, endpoint_id=c.endpoint_id, event_id=c.event_id,
                        event_type=event.type, url=endpoint.url, secrets=secrets[endpoint.id],
                        body=message_body(event), attempt_number=c.attempt_count + 1, trigger=c.trigger))
    for delivery_id, status in gone:
        session.execute(sa.update(table).where(table.c.id == delivery_id).values(
            status=status, claimed_until=None, claimed_by=None, next_attempt_at=None, updated_at=now))
    return jobs


def release(session: Session, *, worker: str, delivery_ids: Sequence[uuid.UUID]) -> None:
    """Give back claims `worker` will not finish (a clean shutdown), so others take them at once."""
    if delivery_ids:
        session.execute(sa.update(WebhookDelivery).where(
            WebhookDelivery.id.in_(list(delivery_ids)), WebhookDelivery.claimed_by == worker).values(
            claimed_until=None, claimed_by=None))


def start_now(session: Session, *, endpoint: WebhookEndpoint, event: Event, claimer: str, now: datetime,
              lease: timedelta, trigger: str) -> Job:
    """Write `event`'s delivery to `endpoint` already claimed by `claimer` (the test send); return its job."""
    delivery = WebhookDelivery(tenant_id=endpoint.tenant_id, endpoint_id=endpoint.id, event_id=event.id,
                               trigger=trigger, next_attempt_at=now, claimed_until=now + lease, claimed_by=claimer,
                               created_at=now, updated_at=now)
    session.add(delivery)
    session.flush()
    return Job(delivery_id=delivery.id, tenant_id=endpoint.tenant_id, endpoint_id=endpoint.id, event_id=event.id,
               event_type=event.type, url=endpoint.url, secrets=tuple(webhooks.signing_secrets(endpoint, now=now)),
               body=message_body(event), attempt_number=1, trigger=trigger)


def next_delay(schedule: Sequence[float], step: int, result: AttemptResult, rng: random.Random) -> float | None:
    """Seconds until the retry after the `step`-th attempt of a round failed, or None when exhausted.

    Svix's schedule with ±20 % jitter; a 429 or 503 with `Retry-After` waits at least that long.
    """
    if step >= len(schedule):
        return None
    delay = schedule[step] * rng.uniform(1 - JITTER, 1 + JITTER)
    if result.retry_after is not None and result.response_status in (429, 503):
        delay = max(delay, result.retry_after)
    return delay


def record_results(session: Session, *, results: Sequence[AttemptResult], worker: str, now: datetime,
                   schedule: Sequence[float], rng: random.Random | None = None) -> list[SimpleNamespace]:
    """Log each attempt and move its delivery on: delivered, retry scheduled, exhausted, or failed.

    Keeps the endpoint's failure run (`failing_since`); a 410 Gone, or failures for 5 days
    without a success, disable the endpoint, which emits `webhook_endpoint.disabled` with its
    audit entry. A delivery whose claim `worker` no longer holds (its lease ran out and another
    took it) only gets the attempt logged. Returns the attempts as written (the `webhook_attempts`
    columns as attributes, what `attempt_view` reads), in `results` order.
    """
    rng = rng or random.Random()
    if not results:
        return []
    attempts, updates, to_disable = [], [], {}
    # One query per table for the whole batch and column rows, not entities; the writes below
    # are one executemany each (a busy worker records dozens of results at once).
    table = WebhookDelivery.__table__
    owned_rows = {row.id: row for row in session.execute(
        sa.select(table.c.id, table.c.claimed_by, table.c.status, table.c.step, table.c.attempt_count)
        .where(table.c.id.in_([r.job.delivery_id for r in results])))}
    endpoints = {row.id: row for row in session.exec(select(WebhookEndpoint).where(
        WebhookEndpoint.id.in_({r.job.endpoint_id for r in results})))}
    for result in results:
        job = result.job
        delivery = owned_rows.get(job.delivery_id)
        endpoint = endpoints.get(job.endpoint_id)
        owned = delivery is not None and delivery.claimed_by == worker and delivery.status == "pending"
        next_at, disable_reason = None, None
        if result.succeeded:
            if endpoint is not None and endpoint.failing_since is not None:
                endpoint.failing_since = None
                session.add(endpoint)
        elif endpoint is not None and endpoint.enabled:
            endpoint.failing_since = as_utc(endpoint.failing_since) or now
            session.add(endpoint)
            if result.response_status == 410:
                disable_reason = "the endpoint answered 410 Gone"
            elif now - endpoint.failing_since >= DISABLE_AFTER:
                disable_reason = "every attempt failed for 5 days"
            if disable_reason:
                to_disable[endpoint.id] = (endpoint, disable_reason)
        if owned:
            step, status = delivery.step + 1, "pending"
            if result.succeeded:
                status = "succeeded"
            elif disable_reason or endpoint is None or not endpoint.enabled:
                status = "failed"
            elif (delay := next_delay(schedule, step, result, rng)) is None:
                status = "exhausted"
            else:
                next_at = now + timedelta(seconds=delay)
            updates.append({"delivery_id": delivery.id, "status": status, "step": step,
                            "attempt_count": max(delivery.attempt_count, job.attempt_number),
                            "next_attempt_at": next_at, "claimed_until": None, "claimed_by": None, "updated_at": now})
        attempts.append({
            "id": uuid.uuid4(), "tenant_id": job.tenant_id, "endpoint_id": job.endpoint_id,
            "delivery_id": job.delivery_id, "event_id": job.event_id, "event_type": job.event_type,
            "attempt_number": job.attempt_number, "trigger": job.trigger,
            "status": "succeeded" if result.succeeded else "failed", "response_status": result.response_status,
            "response_body": result.response_body, "duration_ms": round(result.duration_ms, 3),
            "error_kind": result.error_kind, "error": (result.error or None) and result.error[:500],
            "attempted_at": now, "next_attempt_at": next_at})
    if updates:
        session.execute(sa.update(table).where(table.c.id == sa.bindparam("delivery_id")), updates)
    session.execute(sa.insert(WebhookAttempt.__table__), attempts)
    session.flush()  # the endpoints' failure runs, before a disable reads them
    for endpoint, reason in to_disable.values():
        disable(session, endpoint=endpoint, reason=reason, now=now)
    return [SimpleNamespace(**attempt) for attempt in attempts]


def disable(session: Session, *, endpoint: WebhookEndpoint, reason: str, now: datetime) -> None:
    """Disable the endpoint on the hub's own decision and emit `webhook_endpoint.disabled` (+ audit)."""
    webhooks.disable_endpoint(session, endpoint=endpoint, reason=reason, now=now)
    system = Actor(user_id=None, role=None, tenant_id=endpoint.tenant_id)
    events.record_change(session, tenant_id=endpoint.tenant_id, actor=system, action="webhook_endpoint.disable",
                         resource_type="webhook_endpoint", resource_id=endpoint.id,
                         event_type="webhook_endpoint.disabled", data=webhooks.endpoint_view(endpoint),
                         changes={"enabled": False, "disabledReason": endpoint.disabled_reason})


def _queue_again(session: Session, ids: Sequence[uuid.UUID], now: datetime) -> None:
    session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id.in_(list(ids))).values(
        status="pending", step=0, trigger="manual", next_attempt_at=now, claimed_until=None, claimed_by=None,
        updated_at=now))


def enabled_endpoint(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """Return the tenant's endpoint; NotFound for an unknown or another tenant's id, Conflict when disabled."""
    endpoint = webhooks.get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled: enable it first (PATCH enabled: true)",
                       details={"disabledReason": endpoint.disabled_reason})
    return endpoint


def resend(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, event_id: str,
           now: datetime) -> WebhookDelivery:
    """Queue `event_id` for the endpoint again, due now, in a new round of retries; return the delivery.

    NotFound for another tenant's endpoint or event; Conflict when the endpoint is disabled.
    Works for an event the endpoint never received too (subscribed later, or filtered out).
    """
    endpoint = enabled_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    events.get(session, tenant_id=tenant_id, event_id=event_id)
    delivery = session.exec(select(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.event_id == event_id).with_for_update()).first()
    if delivery is None:
        delivery = WebhookDelivery(tenant_id=tenant_id, endpoint_id=endpoint.id, event_id=event_id, trigger="manual",
                                   next_attempt_at=now, created_at=now, updated_at=now)
        session.add(delivery)
        session.flush()
        return delivery
    _queue_again(session, [delivery.id], now)
    session.refresh(delivery)
    return delivery


def recover(session: Session, *, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, since: datetime,
            until: datetime, now: datetime) -> tuple[int, bool]:
    """Queue again the endpoint's messages of `[since, until)` that failed: exhausted, failed, or waiting
    for a retry after a failed attempt. At most 10,000, oldest first; returns (count, more matched)."""
    if since >= until:
        raise InvalidInput("since must be before until", details={"field": "since"})
    endpoint = enabled_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    ids = list(session.exec(
        select(WebhookDelivery.id).where(
            WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.created_at >= since, WebhookDelivery.created_at < until,
            sa.or_(WebhookDelivery.status.in_(("failed", "exhausted")),
                   sa.and_(WebhookDelivery.status == "pending", WebhookDelivery.step > 0)))
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id).limit(RECOVER_LIMIT + 1)).all())
    truncated, ids = len(ids) > RECOVER_LIMIT, ids[:RECOVER_LIMIT]
    for start in range(0, len(ids), 500):  # bounded IN lists
        _queue_again(session, ids[start:start + 500], now)
    return len(ids), truncated


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    """A delivery as the resend answer shows it."""
    return {"endpointId": str(row.endpoint_id), "eventId": row.event_id, "status": row.status,
            "nextAttemptAt": webhooks.timestamp(row.next_attempt_at)}


def list_attempts(session: Session, *, tenant_id: uuid.UUID, limit: int, after: After | None,
                  endpoint_id: uuid.UUID | None = None, event_id: str | None = None,
                  status: str | None = None) -> Page[WebhookAttempt]:
    """One page of the tenant's attempts (of an endpoint or of an event), newest first, after a keyset position.

    The endpoint or event must exist in the tenant (NotFound otherwise, like an unknown id).
    """
    stmt = select(WebhookAttempt).where(WebhookAttempt.tenant_id == tenant_id)
    if endpoint_id is not None:
        webhooks.get_endpoint(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
        stmt = stmt.where(WebhookAttempt.endpoint_id == endpoint_id)
    if event_id is not None:
        events.get(session, tenant_id=tenant_id, event_id=event_id)
        stmt = stmt.where(WebhookAttempt.event_id == event_id)
    if status is not None:
        stmt = stmt.where(WebhookAttempt.status == status)
    keys = (WebhookAttempt.attempted_at, WebhookAttempt.id)
    if after is None:
        rows = list(session.exec(stmt.order_by(keys[0].desc(), keys[1].desc()).limit(limit + 1)).all())
        return Page(items=rows[:limit], total=0, limit=limit, offset=0, more=len(rows) > limit)
    return paginate_after(session, stmt, limit=limit, keys=keys, descending=True, after=after)


def attempt_view(row: WebhookAttempt) -> dict[str, Any]:
    """An attempt as the attempts log shows it."""
    return {"id": str(row.id), "endpointId": str(row.endpoint_id), "eventId": row.event_id,
            "eventType": row.event_type, "attemptNumber": row.attempt_number, "trigger": row.trigger,
            "status": row.status, "attemptedAt": webhooks.timestamp(row.attempted_at),
            "responseStatus": row.response_status, "responseBody": row.response_body,
            "durationMs": row.duration_ms, "errorKind": row.error_kind, "error": row.error,
            "nextAttemptAt": webhooks.timestamp(row.next_attempt_at)}


def backlog(session: Session) -> tuple[int, datetime | None]:
    """Return (pending deliveries, creation time of the oldest pending one or None)."""
    count, oldest = session.execute(sa.select(sa.func.count(), sa.func.min(WebhookDelivery.created_at)).where(
        WebhookDelivery.status == "pending")).one()
    return int(count or 0), as_utc(oldest)


def heartbeat(session: Session, *, name: str, now: datetime, started_at: datetime, in_flight: int) -> None:
    """Record that worker `name` is alive now, with `in_flight` attempts running."""
    row = session.get(WorkerHeartbeat, name) or WorkerHeartbeat(name=name, started_at=started_at)
    row.last_seen_at, row.in_flight = now, in_flight
    session.add(row)


def latest_heartbeat(session: Session) -> WorkerHeartbeat | None:
    """The heartbeat of the worker seen most recently, or None when no worker ever ran."""
    return session.exec(select(WorkerHeartbeat).order_by(WorkerHeartbeat.last_seen_at.desc()).limit(1)).first()
