"""Operations of tag `sync` (openapi/paths/sync.yaml). Tenant admin.

Sync settings, manual runs, pause/resume, the status per entity and the runs log of a tenant
integration. The runs themselves execute in the worker (`connectors.sync_runner`). Seeds:
integrations document ("Data Synchronization", "Monitoring"); anchor: Nango syncs.
"""

from __future__ import annotations

from uuid import UUID

from handlers import keyset_cursor
from persistence import audit, events, records, sync_runs
from persistence.db import transaction
from persistence.models import utcnow
from persistence.pages import After
from server.security import Caller

SETTINGS_FIELDS = {"enabled": "enabled", "entities": "entities", "frequencySeconds": "frequency_seconds"}


def get_sync_status(id: str, token_info: dict) -> dict:
    """Return the settings and, per synced entity, its state, last run, next run and record count."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        settings, rows = sync_runs.status_rows(session, tenant_id=caller.tenant_id, integration_id=UUID(id))
        counts = {(owner.owner_key, entity): records.count(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                                           owner_key=owner.owner_key, entity=entity)
                  for entity, owner, _, _ in rows}
        return {"integrationId": id, "settings": sync_runs.settings_view(settings),
                "entities": [_entity_status(settings, row, counts, utcnow()) for row in rows]}


def update_sync_settings(id: str, body: dict, token_info: dict) -> dict:
    """Change the sync settings (scheduled runs, entities, frequency)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = sync_runs.update_settings(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                        fields={SETTINGS_FIELDS[key]: value for key, value in body.items()}, now=utcnow())
        return _record_settings(session, caller, row, action="sync.update_settings", changes=body)


def start_sync(id: str, token_info: dict, body: dict | None = None) -> tuple[dict, int]:
    """Queue a run per entity (or answer the live one); 202 with the runs."""
    caller = Caller.from_token(token_info)
    body = body or {}
    with transaction() as session:
        runs = sync_runs.request_runs(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                      entities=body.get("entities"), full_refresh=body.get("fullRefresh", False),
                                      trigger="manual", now=utcnow())
        audit.record(session, tenant_id=caller.tenant_id, actor=caller.actor, action="sync.start",
                     resource_type="integration", resource_id=id, changes={**body, "runs": [str(r.id) for r in runs]})
        return {"runs": [sync_runs.run_view(run) for run in runs]}, 202


def pause_sync(id: str, token_info: dict) -> dict:
    """Pause the integration's syncs."""
    return _set_paused(id, token_info, paused=True)


def resume_sync(id: str, token_info: dict) -> dict:
    """Resume the integration's syncs."""
    return _set_paused(id, token_info, paused=False)


def list_sync_runs(id: str, token_info: dict, limit: int = 50, cursor: str | None = None, entity: str | None = None,
                   status: str | None = None) -> dict:
    """Return one page of the integration's runs, newest first."""
    caller = Caller.from_token(token_info)
    after = None
    if cursor is not None:
        instant, run_id = keyset_cursor.decode(cursor)
        after = After(value=instant, id=run_id)
    with transaction() as session:
        page = sync_runs.list_runs(session, tenant_id=caller.tenant_id, integration_id=UUID(id), entity=entity,
                                   status=status, limit=limit, after=after)
        last = page.items[-1] if page.items else None
        return {"items": [sync_runs.run_view(row) for row in page.items], "limit": page.limit, "hasMore": page.has_more,
                "nextCursor": keyset_cursor.encode(last.queued_at, last.id) if page.has_more and last else None}


def _set_paused(id: str, token_info: dict, *, paused: bool) -> dict:
    caller = Caller.from_token(token_info)
    with transaction() as session:
        row = sync_runs.set_paused(session, tenant_id=caller.tenant_id, integration_id=UUID(id), paused=paused,
                                   now=utcnow())
        return _record_settings(session, caller, row, action="sync.pause" if paused else "sync.resume",
                                changes={"paused": paused})


def _record_settings(session, caller: Caller, row, *, action: str, changes: dict) -> dict:
    view = sync_runs.settings_view(row)
    events.record_change(session, tenant_id=caller.tenant_id, actor=caller.actor, action=action,
                         resource_type="integration", resource_id=row.integration_id, changes=changes,
                         event_type="sync.settings_updated",
                         data={"integrationId": str(row.integration_id), "settings": view})
    return view


def _entity_status(settings, row: tuple, counts: dict, now) -> dict:
    """SyncEntityStatus of one (entity, owner, state, newest run) row of `sync_runs.status_rows`."""
    entity, owner, state, run = row
    return {"entity": entity, "userId": str(owner.user_id) if owner.user_id else None,
            "state": sync_runs.entity_state(settings, run),
            "lastRun": sync_runs.run_view(run) if run is not None else None,
            "lastSuccessAt": sync_runs.timestamp(state.last_success_at) if state is not None else None,
            "nextRunAt": sync_runs.timestamp(sync_runs.next_run_at(settings, state, now)),
            "recordCount": counts[(owner.owner_key, entity)],
            "lastError": sync_runs.error_view(run) if run is not None and run.status == "failed" else None}
