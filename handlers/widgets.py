"""Operations of tag `widgets` (openapi/paths/widgets.yaml): an integration's status, recent
activity and a preview of its synced records, for dashboards. Tenant admin or user. Seed:
integration API implementation, "Widget Data Endpoints"."""

from __future__ import annotations

import json
from uuid import UUID

from handlers import views
from persistence import widgets
from persistence.db import transaction
from persistence.models import utcnow
from server.errors import ApiError
from server.security import Caller


def get_widget_status(id: str, token_info: dict) -> dict:
    """Return the integration's status as the caller sees it (their connection, the last sync, the error)."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        status = widgets.status(session, tenant_id=caller.tenant_id, integration_id=UUID(id), viewer=_viewer(caller))
    return views.widget_status(status)


def get_widget_activity(id: str, token_info: dict, timeRange: str = "24h", limit: int = 10) -> dict:
    """Return the integration's syncs, tests, connects and disconnects within the range, newest first."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        items, total = widgets.activity(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                        viewer=_viewer(caller), time_range=timeRange, limit=limit)
    return {"activities": items, "total": total}


def get_widget_data(id: str, token_info: dict, entity: str, fields: list[str] | None = None,
                    filters: str | None = None, limit: int = 10, userId: str | None = None) -> dict:
    """Return a preview of the synced records of one entity: data cut down to `fields`, filtered by `filters`."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        rows, total = widgets.data_preview(session, tenant_id=caller.tenant_id, integration_id=UUID(id),
                                           viewer=_viewer(caller), entity=entity, filters=_filters(filters),
                                           limit=limit, requested_user_id=UUID(userId) if userId else None)
    return {"data": [views.record_data(row, fields) for row in rows], "total": total, "entity": entity,
            "fetchedAt": views.timestamp(utcnow())}


def _viewer(caller: Caller) -> widgets.Viewer:
    return widgets.Viewer(tenant_id=caller.tenant_id, role=caller.role, user_id=caller.user_id)


def _filters(text: str | None) -> dict | None:
    # A JSON object in a query parameter: parse errors are the client's (400), never a 500.
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ApiError(400, "VALIDATION_ERROR", "filters: not valid JSON (a JSON object of field equalities)",
                       details={"field": "filters"}) from None
    if not isinstance(value, dict):
        raise ApiError(400, "VALIDATION_ERROR", "filters: a JSON object of field equalities",
                       details={"field": "filters"})
    return value
