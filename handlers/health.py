"""Operations of tag `health` (openapi/paths/health.yaml), served at the root path.

Seed: integrations document, "Monitoring & Observability" (/health/integrations, metrics).
"""

from __future__ import annotations

import hmac
from datetime import datetime, timezone

from connexion.context import scope as request_scope
from prometheus_client import generate_latest

from server import runtime

from handlers import views
from persistence import connections
from persistence.db import ping, transaction
from server.errors import ApiError
from server.security import Caller

LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


def get_health() -> tuple[dict, int, dict]:
    """Report healthy (200) when the database answers, else unhealthy (503 with Retry-After)."""
    up = ping()
    body = {
        "status": "healthy" if up else "unhealthy",
        "checks": {"database": "up" if up else "down"},
        "timestamp": views.timestamp(datetime.now(timezone.utc)),
    }
    return body, (200 if up else 503), ({} if up else {"Retry-After": "5"})


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
    # The text exposition format; Prometheus reads plain `text/plain`, which is what the contract names.
    return generate_latest().decode(), 200, {"Content-Type": "text/plain"}
