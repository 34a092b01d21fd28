"""Operations of tag `health` (openapi/paths/health.yaml), served at the root path.

Seed: integrations document, "Monitoring & Observability" (/health/integrations, metrics).
"""

from __future__ import annotations

import hmac
from datetime import datetime, timezone

from connexion.context import scope as request_scope
from prometheus_client import generate_latest
from sqlalchemy.exc import SQLAlchemyError

from server import runtime

from handlers import views
from persistence import connections, deliveries
from persistence.db import ping, transaction
from persistence.models import as_utc
from server.errors import ApiError
from server.observability import observe_backlog
from server.security import Caller

LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}
WORKER_STALE_SECONDS = 30


def get_health() -> tuple[dict, int, dict]:
    """Report healthy (200) when the database answers, else unhealthy (503 with Retry-After)."""
    up = ping()
    body = {
        "status": "healthy" if up else "unhealthy",
        "checks": {"database": "up" if up else "down"},
        "timestamp": views.timestamp(datetime.now(timezone.utc)),
    }
    if up:
        try:
            body["webhooks"] = _webhooks_health()
        except SQLAlchemyError:  # the database went away since the ping: report what is known
            pass
    return body, (200 if up else 503), ({} if up else {"Retry-After": "5"})


def _webhooks_health() -> dict:
    now = datetime.now(timezone.utc)
    with transaction() as session:
        beat = deliveries.latest_heartbeat(session)
        pending, oldest = deliveries.backlog(session)
    seen = as_utc(beat.last_seen_at) if beat else None
    status = "none" if seen is None else ("up" if (now - seen).total_seconds() <= WORKER_STALE_SECONDS else "stale")
    return {"workerLastHeartbeat": views.timestamp(seen), "workerStatus": status, "pendingDeliveries": pending,
            "oldestPendingAgeSeconds": round(max(0.0, (now - oldest).total_seconds()), 3) if oldest else None}


def get_integrations_health(token_info: dict) -> dict:
    """Report every connection's health from its last check: the caller's tenant, or all for a super admin."""
    caller = Caller.from_token(token_info)
    with transaction() as session:
        rows = connections.health_rows(session, tenant_id=caller.tenant_id)
    items = [views.integration_health(integration, connection, provider) for integration, connection, provider in rows]
    return {"status": views.overall_health(items), "checkedAt": views.timestamp(datetime.now(timezone.utc)),
            "integrations": items}


def get_metrics():
    """Prometheus metrics: for the bearer HUB_METRICS_TOKEN, or for loopback clients when none is set."""
    expected = runtime.get().settings.hub_metrics_token
    headers = dict((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request_scope.get("headers", []))
    if expected:
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            raise ApiError(401, "INVALID_TOKEN", "The metrics token is missing or wrong")
    elif (request_scope.get("client") or ("",))[0] not in LOOPBACK:
        raise ApiError(403, "PERMISSION_DENIED", "Metrics are served to loopback clients only (set HUB_METRICS_TOKEN)")
    with transaction() as session:
        pending, oldest = deliveries.backlog(session)
    observe_backlog(pending, (datetime.now(timezone.utc) - oldest).total_seconds() if oldest else None)
    # The text exposition format; Prometheus reads plain `text/plain`, which is what the contract names.
    return generate_latest().decode(), 200, {"Content-Type": "text/plain"}
