"""Fault injection of the sandbox REST API: rate limits, 5xx bursts, latency and expiring tokens.

Set at start (`--rate-limit-every` ... on the command line, `SandboxConfig.faults`) or at run
time through `POST /_control/faults`. Only the REST API counts (not /health, /oauth/* or
/_control/*), so a sync under test sees the faults and its token refreshes do not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class Faults:
    """What to inject; 0 switches a fault off. Counts are of REST API requests since the plan was set.

    - `rate_limit_every` N: every Nth request answers 429 with `Retry-After: retry_after` (seconds).
    - `error_every` N with `error_burst` K: requests N, 2N, ... each start a burst of K
      consecutive `error_status` (5xx) answers.
    - `fail_next` K: the next K requests answer `error_status` (a one-off burst, from now).
    - `latency_ms`: added before every answer (milliseconds).
    - `unauthorized_every` N: every Nth request carrying a bearer token finds that access token
      expired (401 `invalid_token`), so the client must refresh it; the refresh token stays valid.
    """

    rate_limit_every: int = 0
    retry_after: int = 1
    error_every: int = 0
    error_burst: int = 1
    error_status: int = 503
    fail_next: int = 0
    latency_ms: int = 0
    unauthorized_every: int = 0

    def to_json(self) -> dict:
        """Return the plan with camelCase keys (the control endpoint's shape)."""
        return {camel(key): value for key, value in asdict(self).items()}


FIELD_BOUNDS = {  # camelCase name -> (minimum, maximum) accepted by the control endpoint
    "rateLimitEvery": (0, 100_000), "retryAfter": (1, 3600), "errorEvery": (0, 100_000), "errorBurst": (1, 1000),
    "errorStatus": (500, 599), "failNext": (0, 100_000), "latencyMs": (0, 30_000), "unauthorizedEvery": (0, 100_000),
}


@dataclass(frozen=True)
class Injected:
    """A fault to answer instead of the request: HTTP `status` and, for 429, `retry_after` seconds."""

    status: int
    retry_after: int | None = None


class FaultInjector:
    """Counts REST API requests and decides, per request, which fault (if any) it gets. Thread-safe."""

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.configure(faults)

    @property
    def faults(self) -> Faults:
        """The plan in force."""
        return self._faults

    def configure(self, faults: Faults) -> None:
        """Replace the plan and restart the request counters (so "every Nth" counts from now)."""
        with self._lock:
            self._faults = faults
            self._requests = 0
            self._bearer_requests = 0
            self._burst_left = faults.fail_next

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Mark one API request as being judged (its latency slept, its faults counted) for the block's length.

        A request sleeping an earlier plan's latency is counted only when it wakes; `wait_until_idle`
        lets a test wait for such stragglers, so they cannot take a hit of the plan it sets next.
        """
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()

    def wait_until_idle(self, timeout_seconds: float = 30.0) -> bool:
        """Block until no request is being judged, at most `timeout_seconds`; return whether it got there."""
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def latency_seconds(self) -> float:
        """Return the latency to add to this request, in seconds."""
        return self._faults.latency_ms / 1000

    def next_fault(self) -> Injected | None:
        """Count one API request; return the 5xx or 429 to answer instead of it, or None."""
        with self._lock:
            faults = self._faults
            self._requests += 1
            if self._burst_left > 0:
                self._burst_left -= 1
                return Injected(faults.error_status)
            if faults.error_every and self._requests % faults.error_every == 0:
                self._burst_left = faults.error_burst - 1
                return Injected(faults.error_status)
            if faults.rate_limit_every and self._requests % faults.rate_limit_every == 0:
                return Injected(429, faults.retry_after)
            return None

    def expire_this_token(self) -> bool:
        """Count one bearer request; return True when its access token must expire now."""
        with self._lock:
            self._bearer_requests += 1
            every = self._faults.unauthorized_every
            return bool(every) and self._bearer_requests % every == 0


def camel(name: str) -> str:
    """Return the camelCase form of a snake_case field name."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def from_json(body: dict) -> Faults:
    """Return the Faults of a control request body (camelCase, every field optional); ValueError names a bad field."""
    names = {camel(key): key for key in asdict(Faults())}
    values = {}
    for key, value in body.items():
        if key not in names:
            raise ValueError(f"unknown field {key}")
        low, high = FIELD_BOUNDS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{key} must be an integer between {low} and {high}")
        values[names[key]] = value
    return Faults(**values)
