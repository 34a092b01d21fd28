"""The benchmarked operations: the same request against the hub and against the floor."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    """One measured operation. `floor_path` differs from `path` only for the limited variant."""

    key: str
    label: str
    method: str
    path: str
    floor_path: str
    query: str = ""
    expected: int = 200

    def body(self, provider_id: str, name: str) -> bytes:
        """The request body (create only): a valid IntegrationCreate with a unique name."""
        if self.method != "POST":
            return b""
        return json.dumps({"integrationId": provider_id, "name": name}).encode()


OPERATIONS = (
    Operation("catalog", "GET /integrations?limit=50", "GET", "/api/v1/integrations", "/api/v1/integrations",
              query="limit=50"),
    Operation("me", "GET /auth/me", "GET", "/api/v1/auth/me", "/api/v1/auth/me"),
    Operation("create", "POST /tenant/integrations", "POST", "/api/v1/tenant/integrations",
              "/api/v1/tenant/integrations", expected=201),
    # The hub rate-limits every routed operation; the floor limits only this one, so `me`
    # against `me_limited` shows what the limiter costs.
    Operation("me_limited", "GET /auth/me (rate-limited)", "GET", "/api/v1/auth/me", "/api/v1/auth/me-limited"),
)
