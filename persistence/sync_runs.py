"""Sync settings, per-entity sync state and the sync runs outbox. No HTTP; never commits.

Seeds: integrations document ("Data Synchronization", "Monitoring": data sync lag), PrintShop
guide ("Data Synchronization": polling). A run is a row first (the outbox of DESIGN.md): the
request that asks for it, or the scheduler, inserts it `queued`; a worker claims it with a lease
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; the claiming UPDATE runs under SQLite's single writer
lock), commits every page with its checkpoint, and finishes it. One live run per entity and
connection: `active_key` is unique per integration while a run is queued or running.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from persistence import integrations, sync_definitions
from persistence.errors import Conflict, InvalidInput
from persistence.models import Connection, Provider, SyncRun, SyncSettings, SyncState, as_utc
from persistence.pages import After, Page, paginate_after

DEFAULT_FREQUENCY_SECONDS = 3600
FULL_REFRESH_EVERY = timedelta(hours=24)
MAX_CHANGED_IDS = 100
LIVE = ("queued", "running")


class NotConnected(Conflict):
    """The integration is disabled or has no active connection to sync with (409)."""

    code = "INTEGRATION_NOT_CONNECTED"


class SyncPaused(Conflict):
    """The integration's syncs are paused (409 until `POST .../sync/resume`)."""

    code = "SYNC_PAUSED"


@dataclass(frozen=True)
class Owner:
    """One connection a run reads through: `owner_key` ("tenant" or the user id) and its user id."""

    owner_key: str
    user_id: uuid.UUID | None


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 UTC with `Z` and microseconds (the API's Timestamp), or None."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


# -- settings ------------------------------------------------------------------------------------


def get_settings(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID,
                 lock: bool = False) -> SyncSettings:
    """Return the integration's settings (an unsaved row with the defaults when none were set).

    Raises NotFound for an unknown integration or another tenant's.
    """
    integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    stmt = select(SyncSettings).where(SyncSettings.tenant_id == tenant_id, SyncSettings.integration_id == integration_id)
    row = session.exec(stmt.with_for_update() if lock else stmt).first()
    if row is None:
        row = SyncSettings(integration_id=integration_id, tenant_id=tenant_id, enabled=False, entities=[],
                           frequency_seconds=DEFAULT_FREQUENCY_SECONDS, paused=False)
        row.updated_at = None  # type: ignore[assignment] - "never changed" in the view
    return row


def update_settings(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, fields: dict[str, Any],
                    now: datetime) -> SyncSettings:
    """Apply column-named `fields` (enabled, entities, frequency_seconds); return the saved row.

    `entities` must name entities with a sync definition (InvalidInput lists the others).
    Turning `enabled` on, or changing the frequency, makes every entity due now.
    """
    row = get_settings(session, tenant_id=tenant_id, integration_id=integration_id, lock=True)
    if "entities" in fields:
        known = definitions_of(session, tenant_id=tenant_id, integration_id=integration_id)
        check_entities(fields["entities"], known)
    reschedule = (fields.get("enabled") and not row.enabled) or \
        ("frequency_seconds" in fields and fields["frequency_seconds"] != row.frequency_seconds)
    for key, value in fields.items():
        setattr(row, key, value)
    _save(session, row, now)
    if reschedule:
        session.execute(sa.update(SyncState).where(SyncState.tenant_id == tenant_id,
                                                   SyncState.integration_id == integration_id)
                        .values(next_run_at=None, updated_at=now))
    return row


def set_paused(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, paused: bool,
               now: datetime) -> SyncSettings:
    """Pause or resume the integration's syncs (idempotent); return the saved settings."""
    row = get_settings(session, tenant_id=tenant_id, integration_id=integration_id, lock=True)
    if row.paused != paused:
        row.paused, row.paused_at = paused, (now if paused else None)
    _save(session, row, now)
    return row


def _save(session: Session, row: SyncSettings, now: datetime) -> None:
    if row.created_at is None:
        row.created_at = now
    row.updated_at = now
    session.add(row)
    session.flush()


def settings_view(row: SyncSettings) -> dict[str, Any]:
    """SyncSettings as the API shows it."""
    return {"enabled": row.enabled, "entities": list(row.entities or []), "frequencySeconds": row.frequency_seconds,
            "paused": row.paused, "pausedAt": timestamp(row.paused_at), "updatedAt": timestamp(row.updated_at)}


# -- what to sync --------------------------------------------------------------------------------


def definitions_of(session: Session, *, tenant_id: uuid.UUID,
                   integration_id: uuid.UUID) -> dict[str, sync_definitions.SyncDefinition]:
    """Return {entity: SyncDefinition} of the integration's provider (NotFound for another tenant's id)."""
    integration = integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    provider = session.get(Provider, integration.provider_id)
    return sync_definitions.definitions(provider.available_entities if provider else None)


def check_entities(names: Sequence[str], known: dict[str, Any]) -> None:
    """Raise InvalidInput naming every entity of `names` without a sync definition."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInput(f"No sync definition for: {', '.join(unknown)}; syncable: {', '.join(sorted(known)) or 'none'}",
                           details={"field": "entities", "entities": unknown, "syncable": sorted(known)})


def synced_entities(settings: SyncSettings, known: dict[str, Any]) -> list[str]:
    """The entities the settings sync: the chosen ones that still have a definition, else all of them."""
    chosen = [name for name in settings.entities or [] if name in known]
    return chosen or sorted(known)


def active_owners(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID) -> list[Owner]:
    """The active connections to sync through: the tenant's, or each user's of a user-scoped integration.

    Raises NotConnected when the integration is disabled or has none.
    """
    integration = integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    if integration.status == "disabled":
        raise NotConnected("The integration is disabled; activate it to sync")
    stmt = select(Connection).where(Connection.tenant_id == tenant_id, Connection.integration_id == integration_id,
                                    Connection.status == "active")
    if not integration.user_scoped:
        stmt = stmt.where(Connection.owner_key == "tenant")
    owners = [Owner(row.owner_key, row.user_id) for row in session.exec(stmt.order_by(Connection.owner_key))]
    if not owners:
        raise NotConnected("The integration has no active connection; connect it to sync")
    return owners


def request_runs(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, entities: Sequence[str] | None,
                 full_refresh: bool, trigger: str, now: datetime) -> list[SyncRun]:
    """Queue one run per entity and active connection; return them (an already live run instead of a duplicate).

    The business rules of `POST .../sync`: unknown entities are refused (InvalidInput naming
    them), a paused integration is refused (SyncPaused), so is one without an active
    connection (NotConnected). Entities default to the settings' entities.
    """
    settings = get_settings(session, tenant_id=tenant_id, integration_id=integration_id)
    known = definitions_of(session, tenant_id=tenant_id, integration_id=integration_id)
    if entities:
        check_entities(entities, known)
    names = list(entities) if entities else synced_entities(settings, known)
    if not names:
        raise InvalidInput("The provider declares no entity with a sync definition", details={"field": "entities"})
    if settings.paused:
        raise SyncPaused("Syncs of this integration are paused; resume them first")
    owners = active_owners(session, tenant_id=tenant_id, integration_id=integration_id)
    return [queue(session, tenant_id=tenant_id, integration_id=integration_id, owner=owner, entity=name,
                  definition=known[name], full_refresh=full_refresh, trigger=trigger, now=now)
            for owner in owners for name in names]


def queue(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, owner: Owner, entity: str,
          definition: sync_definitions.SyncDefinition, full_refresh: bool, trigger: str, now: datetime) -> SyncRun:
    """Insert a queued run of `entity` for `owner`, or return the live one (made full when asked and not started).

    The kind: full when asked, when the definition has no changed-since parameter, when no run
    completed yet, or when the last full refresh is more than 24 h old; else incremental from
    the entity's watermark.
    """
    existing = live_run(session, integration_id=integration_id, owner_key=owner.owner_key, entity=entity)
    if existing is not None:
        if full_refresh and existing.kind != "full" and existing.started_at is None:
            existing.kind, existing.since, existing.updated_at = "full", None, now
            session.add(existing)
            session.flush()
        return existing
    state = get_state(session, tenant_id=tenant_id, integration_id=integration_id, owner=owner, entity=entity)
    last_full = as_utc(state.last_full_at)
    full = full_refresh or definition.incremental is None or state.watermark is None or last_full is None \
        or now - last_full >= FULL_REFRESH_EVERY
    run = SyncRun(tenant_id=tenant_id, integration_id=integration_id, owner_key=owner.owner_key, user_id=owner.user_id,
                  entity=entity, kind="full" if full else "incremental", trigger=trigger, status="queued",
                  active_key=f"{owner.owner_key}:{entity}", since=None if full else state.watermark,
                  next_attempt_at=now, queued_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(run)
    except sa.exc.IntegrityError:
        # Another request or scheduler queued it between our look and our insert: answer theirs.
        found = live_run(session, integration_id=integration_id, owner_key=owner.owner_key, entity=entity)
        if found is None:
            raise
        return found
    return run


def live_run(session: Session, *, integration_id: uuid.UUID, owner_key: str, entity: str) -> SyncRun | None:
    """The queued or running run of one entity and connection, or None."""
    return session.exec(select(SyncRun).where(SyncRun.integration_id == integration_id,
                                              SyncRun.active_key == f"{owner_key}:{entity}")).first()


def get_state(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, owner: Owner,
              entity: str) -> SyncState:
    """Return the entity's sync state for `owner`, created (flushed) on first use."""
    row = session.exec(select(SyncState).where(SyncState.integration_id == integration_id,
                                               SyncState.owner_key == owner.owner_key, SyncState.entity == entity)).first()
    if row is not None:
        return row
    row = SyncState(tenant_id=tenant_id, integration_id=integration_id, owner_key=owner.owner_key,
                    user_id=owner.user_id, entity=entity)
    try:
        with session.begin_nested():
            session.add(row)
    except sa.exc.IntegrityError:
        return session.exec(select(SyncState).where(SyncState.integration_id == integration_id,
                                                    SyncState.owner_key == owner.owner_key,
                                                    SyncState.entity == entity)).one()
    return row


# -- reading -------------------------------------------------------------------------------------


def list_runs(session: Session, *, tenant_id: uuid.UUID, integration_id: uuid.UUID, entity: str | None,
              status: str | None, limit: int, after: After | None) -> Page[SyncRun]:
    """One page of the integration's runs, newest first (by queued time, then id), after a keyset position."""
    integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    stmt = select(SyncRun).where(SyncRun.tenant_id == tenant_id, SyncRun.integration_id == integration_id)
    if entity is not None:
        stmt = stmt.where(SyncRun.entity == entity)
    if status is not None:
        stmt = stmt.where(SyncRun.status == status)
    keys = (SyncRun.queued_at, SyncRun.id)
    if after is None:
        rows = list(session.exec(stmt.order_by(keys[0].desc(), keys[1].desc()).limit(limit + 1)).all())
        return Page(items=rows[:limit], total=0, limit=limit, offset=0, more=len(rows) > limit)
    return paginate_after(session, stmt, limit=limit, keys=keys, descending=True, after=after)


def status_rows(session: Session, *, tenant_id: uuid.UUID,
                integration_id: uuid.UUID) -> tuple[SyncSettings, list[tuple[str, Owner, SyncState | None, SyncRun | None]]]:
    """The settings and, per synced entity and connection owner, its state and newest run (None when never run).

    Owners: the tenant, or every user holding a connection to a user-scoped integration (and
    any owner that has sync state from earlier).
    """
    settings = get_settings(session, tenant_id=tenant_id, integration_id=integration_id)
    integration = integrations.get(session, tenant_id=tenant_id, integration_id=integration_id)
    names = synced_entities(settings, definitions_of(session, tenant_id=tenant_id, integration_id=integration_id))
    states = {(row.owner_key, row.entity): row for row in session.exec(select(SyncState).where(
        SyncState.tenant_id == tenant_id, SyncState.integration_id == integration_id))}
    owners = {"tenant": Owner("tenant", None)} if not integration.user_scoped else {}
    if integration.user_scoped:
        for row in session.exec(select(Connection).where(Connection.tenant_id == tenant_id,
                                                         Connection.integration_id == integration_id,
                                                         Connection.owner_key != "tenant")):
            owners[row.owner_key] = Owner(row.owner_key, row.user_id)
        for state in states.values():
            owners.setdefault(state.owner_key, Owner(state.owner_key, state.user_id))
    rows = []
    for owner in sorted(owners.values(), key=lambda o: o.owner_key):
        for name in names:
            newest = session.exec(select(SyncRun).where(
                SyncRun.tenant_id == tenant_id, SyncRun.integration_id == integration_id,
                SyncRun.owner_key == owner.owner_key, SyncRun.entity == name)
                .order_by(SyncRun.queued_at.desc(), SyncRun.id.desc()).limit(1)).first()
            rows.append((name, owner, states.get((owner.owner_key, name)), newest))
    return settings, rows


def entity_state(settings: SyncSettings, run: SyncRun | None) -> str:
    """idle | running | paused | error of one entity, from the settings and its newest run."""
    if settings.paused:
        return "paused"
    if run is not None and run.status in LIVE:
        return "running"
    if run is not None and run.status == "failed":
        return "error"
    return "idle"


def next_run_at(settings: SyncSettings, state: SyncState | None, now: datetime) -> datetime | None:
    """When the scheduler queues the entity next: None when scheduled runs are off or paused."""
    if not settings.enabled or settings.paused:
        return None
    due = as_utc(state.next_run_at) if state is not None else None
    return due if due is not None and due > now else now


def error_view(run: SyncRun | None) -> dict[str, str] | None:
    """`{type, message}` of a failed run, else None."""
    if run is None or run.error_type is None:
        return None
    return {"type": run.error_type, "message": run.error_message or ""}


def run_view(row: SyncRun) -> dict[str, Any]:
    """SyncRun as the API (and the `sync.*` events) show it."""
    return {"id": str(row.id), "integrationId": str(row.integration_id), "entity": row.entity,
            "userId": str(row.user_id) if row.user_id else None, "kind": row.kind, "trigger": row.trigger,
            "status": row.status, "queuedAt": timestamp(row.queued_at), "startedAt": timestamp(row.started_at),
            "finishedAt": timestamp(row.finished_at), "added": row.added, "updated": row.updated,
            "deleted": row.deleted, "pages": row.pages, "requests": row.requests,
            "error": error_view(row) if row.status == "failed" else None}


# -- the worker's side ---------------------------------------------------------------------------


def claim_due(session: Session, *, worker: str, now: datetime, lease: timedelta, limit: int,
              integration_id: uuid.UUID | None = None) -> list[SyncRun]:
    """Claim up to `limit` due runs for `worker` until `now + lease` (only `integration_id`'s when given);
    return them, oldest due first.

    Due: queued or running (a dead worker's run, lease expired), `next_attempt_at` reached, and
    the integration not paused. A claimed run is `running`; `started_at` is set on its first
    claim only (the caller emits `sync.started` for those: `claims == 1`).
    """
    if limit <= 0:
        return []
    paused = select(SyncSettings.integration_id).where(SyncSettings.paused.is_(True))
    due = (select(SyncRun.id)
           .where(SyncRun.status.in_(LIVE), SyncRun.next_attempt_at <= now,
                  sa.or_(SyncRun.claimed_until.is_(None), SyncRun.claimed_until < now),
                  SyncRun.integration_id.not_in(paused))
           .order_by(SyncRun.next_attempt_at).limit(limit))
    if integration_id is not None:
        due = due.where(SyncRun.integration_id == integration_id)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=SyncRun)
    ids = list(session.exec(due).all())
    if not ids:
        return []
    session.execute(sa.update(SyncRun).where(SyncRun.id.in_(ids))
                    .values(status="running", claimed_until=now + lease, claimed_by=worker, claims=SyncRun.claims + 1,
                            started_at=sa.func.coalesce(SyncRun.started_at, now), updated_at=now)
                    .execution_options(synchronize_session=False))
    rows = list(session.exec(select(SyncRun).where(SyncRun.id.in_(ids)).order_by(SyncRun.next_attempt_at)).all())
    for row in rows:
        session.refresh(row)
    return rows


def owned(session: Session, *, run_id: uuid.UUID, worker: str) -> SyncRun | None:
    """The run, locked, when `worker` still holds its claim (running, claimed by it); else None."""
    row = session.exec(select(SyncRun).where(SyncRun.id == run_id).with_for_update()).first()
    if row is None or row.status != "running" or row.claimed_by != worker:
        return None
    return row


def is_paused(session: Session, *, integration_id: uuid.UUID) -> bool:
    """True when the integration's syncs are paused."""
    return bool(session.exec(select(SyncSettings.paused).where(SyncSettings.integration_id == integration_id)).first())


def record_page(session: Session, run: SyncRun, *, counts: dict[str, int], changed_ids: Sequence[str], requests: int,
                checkpoint: dict | None, max_seen: datetime | None, now: datetime, lease: timedelta) -> None:
    """Add one committed page to the run: counts, ids, requests, checkpoint (the next request), watermark, lease."""
    run.added += counts.get("added", 0)
    run.updated += counts.get("updated", 0)
    run.deleted += counts.get("deleted", 0)
    run.pages += 1
    run.requests += requests
    run.checkpoint = checkpoint
    if changed_ids and len(run.changed_ids or []) < MAX_CHANGED_IDS:
        run.changed_ids = (list(run.changed_ids or []) + list(changed_ids))[:MAX_CHANGED_IDS]
    if max_seen is not None and (run.max_seen is None or max_seen > as_utc(run.max_seen)):
        run.max_seen = max_seen
    run.claimed_until, run.updated_at = now + lease, now
    session.add(run)


def record_deletions(session: Session, run: SyncRun, *, count: int, changed_ids: Sequence[str]) -> None:
    """Add the tombstones of a completed full run (records it did not see) to its counts."""
    run.deleted += count
    if changed_ids and len(run.changed_ids or []) < MAX_CHANGED_IDS:
        run.changed_ids = (list(run.changed_ids or []) + list(changed_ids))[:MAX_CHANGED_IDS]
    session.add(run)


def release(session: Session, run: SyncRun, *, requests: int, next_attempt_at: datetime, now: datetime) -> None:
    """Put a claimed run back in the queue (paused, circuit open, a long Retry-After); it resumes at its checkpoint."""
    run.status, run.claimed_by, run.claimed_until = "queued", None, None
    run.requests += requests
    run.next_attempt_at, run.updated_at = next_attempt_at, now
    session.add(run)


def finish(session: Session, run: SyncRun, *, succeeded: bool, requests: int, error_type: str | None,
           error_message: str | None, now: datetime) -> SyncState:
    """End the run (succeeded or failed) and move its entity's state on; return the state.

    A success advances the watermark to the newest `updatedAt` stored (never backwards) and, for
    a full run, `last_full_at`. Either way the entity's next scheduled run is planned from now.
    """
    run.status = "succeeded" if succeeded else "failed"
    run.active_key, run.claimed_by, run.claimed_until, run.checkpoint = None, None, None, None
    run.requests += requests
    run.error_type, run.error_message = (None, None) if succeeded else (error_type, (error_message or "")[:500])
    run.finished_at = run.updated_at = now
    session.add(run)
    state = get_state(session, tenant_id=run.tenant_id, integration_id=run.integration_id,
                      owner=Owner(run.owner_key, run.user_id), entity=run.entity)
    state.last_run_id = run.id
    if succeeded:
        state.last_success_at = now
        if run.max_seen is not None and (state.watermark is None or as_utc(run.max_seen) > as_utc(state.watermark)):
            state.watermark = run.max_seen
        if run.kind == "full":
            state.last_full_at = now
    settings = session.get(SyncSettings, run.integration_id)
    frequency = settings.frequency_seconds if settings is not None else DEFAULT_FREQUENCY_SECONDS
    state.next_run_at = now + timedelta(seconds=frequency)
    state.updated_at = now
    session.add(state)
    session.flush()
    return state


def scheduled_integrations(session: Session) -> list[SyncSettings]:
    """Every integration whose scheduled runs are on and not paused (all tenants: the scheduler's view)."""
    return list(session.exec(select(SyncSettings).where(SyncSettings.enabled.is_(True),
                                                        SyncSettings.paused.is_(False))).all())


def due_entities(session: Session, *, settings: SyncSettings, now: datetime) -> list[tuple[Owner, str, sync_definitions.SyncDefinition]]:
    """The (owner, entity, definition) of one scheduled integration whose next run is due and none is live.

    Empty when the integration is disabled or has no active connection.
    """
    try:
        owners = active_owners(session, tenant_id=settings.tenant_id, integration_id=settings.integration_id)
    except NotConnected:
        return []
    known = definitions_of(session, tenant_id=settings.tenant_id, integration_id=settings.integration_id)
    states = {(row.owner_key, row.entity): row for row in session.exec(select(SyncState).where(
        SyncState.integration_id == settings.integration_id))}
    live = set(session.exec(select(SyncRun.active_key).where(SyncRun.integration_id == settings.integration_id,
                                                             SyncRun.active_key.is_not(None))).all())
    due = []
    for owner in owners:
        for name in synced_entities(settings, known):
            state = states.get((owner.owner_key, name))
            next_at = as_utc(state.next_run_at) if state is not None else None
            if f"{owner.owner_key}:{name}" not in live and (next_at is None or next_at <= now):
                due.append((owner, name, known[name]))
    return due


def plan_next(session: Session, *, run: SyncRun, frequency_seconds: int, now: datetime) -> None:
    """Set the entity's next scheduled run `frequency_seconds` after now (the scheduler queued one)."""
    state = get_state(session, tenant_id=run.tenant_id, integration_id=run.integration_id,
                      owner=Owner(run.owner_key, run.user_id), entity=run.entity)
    state.next_run_at, state.updated_at = now + timedelta(seconds=frequency_seconds), now
    session.add(state)


