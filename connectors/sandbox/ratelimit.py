"""Per-credential sliding-window request limiter of the sandbox REST API (in memory, thread-safe)."""

from __future__ import annotations

import math
import threading
from collections import deque

WINDOW_SECONDS = 60.0


class SlidingWindowLimiter:
    """Admit at most `limit` requests per key within any WINDOW_SECONDS span.

    A sliding log rather than fixed minute buckets: a client cannot burst 2x the limit across a
    bucket boundary, and Retry-After is exactly when the oldest counted request leaves the window.
    Refused requests are not counted, so a client that waits Retry-After is admitted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}
        self._blocked_until = 0.0

    def hit(self, key: str, *, limit: int, now: float) -> int | None:
        """Count one request of `key` at `now` (seconds); return None if admitted, else Retry-After (s, >= 1)."""
        with self._lock:
            if now < self._blocked_until:
                return max(1, math.ceil(self._blocked_until - now))
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - WINDOW_SECONDS:
                hits.popleft()
            if len(hits) >= limit:
                return max(1, math.ceil(hits[0] + WINDOW_SECONDS - now))
            hits.append(now)
            return None

    def block_all(self, *, until: float) -> None:
        """Refuse every request of every key until `until` (seconds, same clock as `hit`)."""
        with self._lock:
            self._blocked_until = until

    def reset(self) -> None:
        """Forget all counted requests and any block."""
        with self._lock:
            self._hits.clear()
            self._blocked_until = 0.0
