"""Reachability check of a provider: send its `testRequest` to its `apiBaseUrl` over real HTTP.

Seed: integration API implementation, "Test System-Level Connection". Redirects are not
followed (a redirect is an answer, not a hop to take) and the body is never read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

USER_AGENT = "integration-hub/1.0 (+provider-test)"


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one check. `response_time_ms` is None when no answer came back."""

    success: bool
    message: str | None
    error: str | None
    tested_at: datetime
    response_time_ms: float | None


def probe(base_url: str, *, method: str, path: str, expected_status: int, timeout: float = 10.0) -> ProbeResult:
    """Send `method base_url+path` and report whether `expected_status` came back.

    Network failures (DNS, refused, timeout, TLS) are reported as `success=False` with a short
    error, never raised. `timeout` is in seconds, for connect and read alike.
    """
    url = base_url.rstrip("/") + path
    tested_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, headers={"User-Agent": USER_AGENT}) as client:
            with client.stream(method, url) as response:
                status = response.status_code
    except httpx.TimeoutException:
        return ProbeResult(False, None, f"{method} {url} timed out after {timeout:g} s", tested_at, None)
    except httpx.HTTPError as exc:
        return ProbeResult(False, None, f"{method} {url} failed: {type(exc).__name__}: {str(exc)[:200]}", tested_at, None)
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    if status == expected_status:
        return ProbeResult(True, f"{method} {url} answered {status} as expected", None, tested_at, elapsed)
    return ProbeResult(False, None, f"{method} {url} answered {status}, expected {expected_status}", tested_at, elapsed)
