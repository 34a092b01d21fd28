"""Rate limiting with the `limits` library (moving window, in-memory storage).

Used now for the per-integration connection-test limit; the per-plan and per-endpoint-class
limits build on the same limiter.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from handlers.errors import ApiError

_limiter = MovingWindowRateLimiter(MemoryStorage())


def enforce(rule: str, *key: str) -> None:
    """Count one hit of `key` against `rule` (e.g. "10/minute"); raise 429 RATE_LIMIT_EXCEEDED past it.

    The 429 carries `Retry-After` (seconds until the window frees a slot) and `retryAfter`.
    """
    item = parse(rule)
    if _limiter.hit(item, *key):
        return
    reset_at = _limiter.get_window_stats(item, *key).reset_time
    retry_after = max(1, math.ceil(reset_at - time.time()))
    raise ApiError(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded. Please try again later.",
                   headers={"Retry-After": str(retry_after)}, retry_after=retry_after)
