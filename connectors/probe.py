"""Reachability check of a provider: send a test request to its API over real HTTP.

Seeds: integration API implementation, "Test System-Level Connection" and "Test Connection".
Every call passes the outbound guard (connectors/outbound.py): no redirects followed (a
redirect is an answer, not a hop to take), timeouts, pinned and checked addresses.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

from connectors.outbound import OutboundPolicy, OutboundRefused, client, read_capped

USER_AGENT = "integration-hub/1.0 (+connection-test)"


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one check. `response_time_ms` is None when no answer came back.

    `status` is the HTTP status received (None without an answer); `body` the JSON answer when
    it parsed as a JSON object (used as the test's details), else None.
    """

    success: bool
    message: str | None
    error: str | None
    tested_at: datetime
    response_time_ms: float | None
    status: int | None = None
    body: dict | None = None


def probe(
    base_url: str,
    *,
    method: str,
    path: str,
    expected_status: int | None,
    policy: OutboundPolicy,
    headers: dict[str, str] | None = None,
) -> ProbeResult:
    """Send `method base_url+path` and report whether `expected_status` (None: any 2xx) came back.

    Network failures (refused URL, DNS, connection refused, timeout, TLS, malformed URL) are
    reported as `success=False` with a short error, never raised. Timeouts come from `policy`
    (seconds, connect and read alike).
    """
    url = base_url.rstrip("/") + path
    tested_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    try:
        with client(policy, headers={"User-Agent": USER_AGENT, **(headers or {})}) as http:
            with http.stream(method, url) as response:
                status = response.status_code
                raw = read_capped(response, policy.max_response_bytes)
    except OutboundRefused as exc:
        return ProbeResult(False, None, f"{method} {url} refused by the outbound guard: {exc}", tested_at, None)
    except httpx.TimeoutException:
        return ProbeResult(False, None, f"{method} {url} timed out after {policy.timeout:g} s", tested_at, None)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return ProbeResult(False, None, f"{method} {url} failed: {type(exc).__name__}: {str(exc)[:200]}", tested_at, None)
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    body = _json_object(raw)
    expected = "a 2xx" if expected_status is None else str(expected_status)
    if status == expected_status or (expected_status is None and 200 <= status < 300):
        return ProbeResult(True, f"{method} {url} answered {status} as expected", None, tested_at, elapsed, status, body)
    return ProbeResult(False, None, f"{method} {url} answered {status}, expected {expected}", tested_at, elapsed,
                       status, body)


def _json_object(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
