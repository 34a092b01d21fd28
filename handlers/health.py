"""Operations of tag `health` (openapi/paths/health.yaml), served at the root path."""

from __future__ import annotations

from datetime import datetime, timezone

from handlers import views
from persistence.db import ping


def get_health() -> tuple[dict, int, dict]:
    """Report healthy (200) when the database answers, else unhealthy (503 with Retry-After)."""
    up = ping()
    body = {
        "status": "healthy" if up else "unhealthy",
        "checks": {"database": "up" if up else "down"},
        "timestamp": views.timestamp(datetime.now(timezone.utc)),
    }
    return body, (200 if up else 503), ({} if up else {"Retry-After": "5"})
