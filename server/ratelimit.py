"""Rate limits, declared in the spec and applied in one place (the `limits` library).

- Per tenant, by plan, over 15 minutes (integration runbook 4.2): `x-plan-limits`.
- Per endpoint class, per minute (integration API "Rate Limits"): each operation's
  `x-rate-limit-class`, limits in `x-rate-limit-classes`; keyed by tenant (a super admin by
  user, an anonymous caller by IP).
- Login and register, per IP and per email (`enforce_login`, `enforce_register`). Failed
  logins count for 15 minutes against the (email, client IP) pair and against the email. The
  pair's limit stops one address guessing; the email's limit (guessing from many addresses)
  only refuses addresses other than the one the account last signed in from successfully, so
  an attacker cannot lock the owner out of an account from elsewhere.

Counters live in memory, or in Redis when `REDIS_URL` is set so several processes share them.
Every limited response carries X-RateLimit-Limit / -Remaining / -Reset (unix seconds) of the
tightest applicable limit; a 429 adds Retry-After and `retryAfter`.

How it counts, and why (this runs on every request, on the event loop):

- Strategy: limits' sliding window counter (`SlidingWindowCounterRateLimiter`): per key a count
  for the current window and one for the previous window, weighted by the share of it that is
  still inside the sliding window. O(1) memory and work per key whatever the traffic; the moving
  window it replaces kept one entry per hit for the whole window (thousands per busy tenant over
  15 minutes) and did list work on every hit. The price is an approximation once a key's first
  window has turned over; within that first window the count is exact.
- A window starts at the key's first hit and turns over every window length after that, which
  is how the library's Redis scripts count; `WindowCounters` counts the same way in memory, so
  both backends agree. (limits' MemoryStorage aligns windows on the wall clock instead: hits of
  a key first seen at 0:59 would be weighted down into the next minute one second later.)
- In memory, `WindowCounters` rather than limits' MemoryStorage, which starts a new
  `threading.Timer` from inside hit() whenever the previous one has finished: a thread start
  (0.1-0.6 ms) on the request path, stalling the event loop. Here expiry is inline: a record
  found expired is dropped, and each call also looks at the two records at the front of the
  table, dropping them if expired, else moving them to the back. A call adds at most one
  record, so the records of keys never seen again are swept faster than they come (under a
  stream of new keys about 1.3 times the live records are held), with no thread and no pause.
- One storage trip per request: `check` counts the hit and reads the window back in the same
  call and computes remaining and reset from the counters (`window_stats`, the formula of
  limits' get_window_stats): one lock hold in memory; in Redis the library's own two Lua scripts
  (hit, read back) for every limit of the request sent in one pipeline, where hit() +
  get_window_stats() per limit took four round trips. Other backends `limits` knows (a Redis
  cluster, whose keys of one request live on different nodes, ...) take the storage's generic
  methods, one call each.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.storage import (
    RedisClusterStorage,
    RedisStorage,
    Storage,
    storage_from_string,
)
from limits.storage.base import SlidingWindowCounterSupport
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server import runtime
from server.errors import ApiError, error_response
from server.observability import RATE_LIMIT_HITS

PLAN_WINDOW_MINUTES = 15
LOGIN_FAILURES_PER_EMAIL = "10/15minutes"
LOGIN_FAILURES_PER_EMAIL_AND_IP = "10/15minutes"
LOGIN_ATTEMPTS_PER_IP = "30/minute"
REGISTRATIONS_PER_IP = "10/hour"
REGISTRATIONS_PER_EMAIL = "5/hour"

# (previous count, seconds the previous window still weighs, current count, seconds to the current's expiry):
# what limits' `get_sliding_window` returns.
Window = tuple[int, float, int, float]
Hit = tuple[str, int, int]  # (storage key, limit, window length in seconds)
NO_WINDOW: Window = (0, 0.0, 0, 0.0)


class WindowCounters(Storage, SlidingWindowCounterSupport):
    """In-memory counters for limits' sliding window counter strategy, expired inline, thread-safe.

    One record per key, [previous count, previous window's end, current count, current record's
    expiry], all times from `clock`; a current record lives two window lengths from its first hit
    and turns into the previous one after one (as in limits' acquire_sliding_window.lua).
    """

    SWEEP_PER_CALL = 2  # more than the one record a call can add, so dead ones cannot pile up

    def __init__(self, uri: str | None = None, *, clock: Callable[[], float] = time.time, **options: Any) -> None:
        super().__init__(uri, **options)
        self.clock = clock
        self._records: OrderedDict[str, list] = OrderedDict()
        self._lock = threading.Lock()  # hits come from the event loop and from worker threads

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def __len__(self) -> int:
        """Return the number of records held (live ones, and expired ones not swept yet)."""
        return len(self._records)

    def hit_sliding_windows(self, hits: list[Hit]) -> list[tuple[bool, Window]]:
        """Count one hit of each (key, limit, expiry) not past its limit; return (counted, window after) of each."""
        with self._lock:
            now = self.clock()
            return [self._acquire(key, limit, expiry, 1, now) for key, limit, expiry in hits]

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count `amount` hits of `key` unless that would take its weighted count past `limit`."""
        with self._lock:
            return self._acquire(key, limit, expiry, amount, self.clock())[0]

    def get_sliding_window(self, key: str, expiry: int) -> Window:
        """Return the key's (previous count, previous TTL, current count, current TTL)."""
        with self._lock:
            now = self.clock()
            return self._window(self._record(key, expiry, now), now)

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        """Forget the key's counters."""
        self.clear(key)

    def clear(self, key: str) -> None:
        """Forget the key's counters."""
        with self._lock:
            self._records.pop(key, None)

    def reset(self) -> int:
        """Forget every counter; return how many records there were."""
        with self._lock:
            count = len(self._records)
            self._records.clear()
            return count

    def check(self) -> bool:
        """Report healthy (nothing can be down)."""
        return True

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Not supported: these counters serve the sliding window counter strategy only."""
        raise NotImplementedError("WindowCounters serves SlidingWindowCounterRateLimiter only")

    def get(self, key: str) -> int:
        """Not supported: these counters serve the sliding window counter strategy only."""
        raise NotImplementedError("WindowCounters serves SlidingWindowCounterRateLimiter only")

    def get_expiry(self, key: str) -> float:
        """Not supported: these counters serve the sliding window counter strategy only."""
        raise NotImplementedError("WindowCounters serves SlidingWindowCounterRateLimiter only")

    def _acquire(self, key: str, limit: int, expiry: int, amount: int, now: float) -> tuple[bool, Window]:
        record = self._record(key, expiry, now)
        previous, previous_ttl, current, _ = window = self._window(record, now)
        if amount > limit or math.floor(previous * previous_ttl / expiry) + current + amount > limit:
            return False, window
        if record is None:
            record = self._records[key] = [0, 0.0, 0, now + 2 * expiry]
        record[2] += amount
        return True, self._window(record, now)

    def _record(self, key: str, expiry: int, now: float) -> list | None:
        """Return the key's record as of `now`, its window turned over if due; None if it has none."""
        self._sweep(now)
        record = self._records.get(key)
        if record is None:
            return None
        if record[3] <= now:
            del self._records[key]
            return None
        if record[3] - now < expiry:  # the current window is over: it becomes the previous one
            record[:] = [record[2], record[3], 0, record[3] + expiry]
        return record

    def _sweep(self, now: float) -> None:
        """Drop the front records if expired, else move them to the back: each record's turn comes round."""
        records = self._records
        for _ in range(min(self.SWEEP_PER_CALL, len(records))):
            key, record = records.popitem(last=False)
            if record[3] > now:
                records[key] = record

    @staticmethod
    def _window(record: list | None, now: float) -> Window:
        if record is None:
            return NO_WINDOW
        return record[0], max(0.0, record[1] - now), record[2], max(0.0, record[3] - now)


def _hit_in_redis(storage: RedisStorage, no_script: type[Exception], hits: list[Hit]) -> list[tuple[bool, Window]]:
    """Count the hits with limits' own Lua scripts (acquire, then read back), all in one pipeline."""
    acquire, read = storage.lua_acquire_sliding_window, storage.lua_sliding_window
    pairs = [[storage.prefixed_key(storage._previous_window_key(key)),  # the keys the library's methods use
              storage.prefixed_key(storage._current_window_key(key))] for key, _, _ in hits]
    pipe = storage.get_connection().pipeline(transaction=False)
    for (_, limit, expiry), keys in zip(hits, pairs):
        pipe.evalsha(acquire.sha, 2, *keys, limit, expiry, 1)
        pipe.evalsha(read.sha, 2, *keys, expiry)
    replies = pipe.execute(raise_on_error=False)
    results = []
    for index, ((_, limit, expiry), keys) in enumerate(zip(hits, pairs)):
        acquired, window = replies[2 * index:2 * index + 2]
        # Scripts not loaded yet, or flushed by a Redis restart: calling the Script loads it.
        if isinstance(acquired, no_script):
            acquired = acquire(keys, [limit, expiry, 1])
        if isinstance(acquired, no_script) or isinstance(window, no_script):
            window = read(keys, [expiry])
        for reply in (acquired, window):
            if isinstance(reply, Exception):
                raise reply
        results.append((bool(acquired), (int(window[0] or 0), max(0.0, float(window[1] or 0)) / 1000,
                                          int(window[2] or 0), max(0.0, float(window[3] or 0)) / 1000)))
    return results


def _hit_one_by_one(storage: SlidingWindowCounterSupport, hits: list[Hit]) -> list[tuple[bool, Window]]:
    """Count the hits and read the windows back through the storage's generic interface (any other backend)."""
    return [(storage.acquire_sliding_window_entry(key, limit, expiry), storage.get_sliding_window(key, expiry))
            for key, limit, expiry in hits]


def window_stats(item: RateLimitItem, window: Window, now: float) -> tuple[int, float]:
    """Return (remaining, reset time) of `item` from its counters, as limits' get_window_stats computes them.

    Reset: when the previous window's weight next drops by a whole hit, or the current window ends.
    The current window ends `current_ttl - expiry` from now (its record outlives it by one window);
    limits writes `current_ttl % expiry`, which is 0 instead of a whole window at a key's first hit.
    """
    previous, previous_ttl, current, current_ttl = window
    expiry = item.get_expiry()
    remaining = max(0, item.amount - math.floor(previous * previous_ttl / expiry + current))
    resets = [previous_ttl % (expiry / previous)] if previous else []
    if current:
        resets.append(max(0.0, current_ttl - expiry))
    return remaining, now + min(resets, default=0.0)


@dataclass
class RateLimits:
    """The limiter and the spec's declarations. `scale` multiplies every limit (tests raise it)."""

    storage_uri: str = "memory://"
    plan_limits: dict[str, int] = field(default_factory=dict)
    class_limits: dict[str, int] = field(default_factory=dict)
    operation_classes: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0
    clock: Callable[[], float] = time.time  # of the in-memory counters and of the headers
    limiter: SlidingWindowCounterRateLimiter = field(init=False)
    _hit: Callable[[list[Hit]], list[tuple[bool, Window]]] = field(init=False, repr=False)
    # (kind, plan or class, scale) -> item: `scale` is read at each request (tests change it).
    _items: dict[tuple[str, str, float], RateLimitItem] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.storage_uri.startswith("memory://"):
            storage = WindowCounters(clock=self.clock)
            self._hit = storage.hit_sliding_windows
        else:
            storage = storage_from_string(self.storage_uri)
            if isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage):
                exceptions = importlib.import_module(f"{storage.target_server}.exceptions")  # redis or valkey
                self._hit = partial(_hit_in_redis, storage, exceptions.NoScriptError)
            else:
                self._hit = partial(_hit_one_by_one, storage)
        self.limiter = SlidingWindowCounterRateLimiter(storage)

    def item(self, rule: str | RateLimitItem) -> RateLimitItem:
        """Parse a rule ("10/minute") and apply `scale`."""
        item = parse(rule) if isinstance(rule, str) else rule
        amount = max(1, int(item.amount * self.scale))
        return type(item)(amount, item.multiples, item.namespace)

    def plan_item(self, plan: str) -> RateLimitItem:
        """The scaled limit of a plan (`x-plan-limits`: requests per PLAN_WINDOW_MINUTES), built once per plan."""
        key = ("plan", plan, self.scale)
        item = self._items.get(key)
        if item is None:
            window = RateLimitItemPerMinute(self.plan_limits[plan], PLAN_WINDOW_MINUTES)
            item = self._items[key] = self.item(window)
        return item

    def class_item(self, klass: str) -> RateLimitItem:
        """The scaled limit of an endpoint class (`x-rate-limit-classes`: requests per minute), built once per class."""
        key = ("class", klass, self.scale)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = self.item(RateLimitItemPerMinute(self.class_limits[klass]))
        return item

    def check(self, checks: list[tuple[str, RateLimitItem, tuple[str, ...]]]) -> tuple[dict[str, str], int | None, str]:
        """Hit every (name, limit, key) and return (headers, retry_after or None, name of the limit hit).

        Counters of limits that were not exceeded are still incremented; a refused request is
        counted against the limits it passed, like any other.
        """
        counted = self._hit([(limit.key_for(*key), limit.amount, limit.get_expiry()) for _, limit, key in checks])
        now = self.clock()
        tightest: tuple[int, int, int] | None = None
        refused: tuple[int, str] | None = None
        for (name, limit, _), (allowed, window) in zip(checks, counted):
            remaining, reset_time = window_stats(limit, window, now)
            if tightest is None or remaining < tightest[1]:
                tightest = (limit.amount, remaining, math.ceil(reset_time))
            if not allowed and refused is None:
                refused = (max(1, math.ceil(reset_time - now)), name)
        headers = {}
        if tightest is not None:
            headers = {"X-RateLimit-Limit": str(tightest[0]), "X-RateLimit-Remaining": str(tightest[1]),
                       "X-RateLimit-Reset": str(tightest[2])}
        return headers, (refused[0] if refused else None), (refused[1] if refused else "")


def from_spec(spec: dict[str, Any], *, storage_uri: str, scale: float) -> RateLimits:
    """Build the limits from the spec's `x-plan-limits`, `x-rate-limit-classes` and each operation's class."""
    classes: dict[str, str] = {}
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                classes[operation["operationId"]] = operation.get("x-rate-limit-class", "")
    return RateLimits(storage_uri=storage_uri, plan_limits=dict(spec.get("x-plan-limits", {})),
                      class_limits=dict(spec.get("x-rate-limit-classes", {})), operation_classes=classes, scale=scale)


def too_many(retry_after: int, headers: dict[str, str], name: str) -> ApiError:
    """The 429 RATE_LIMIT_EXCEEDED error with Retry-After."""
    RATE_LIMIT_HITS.labels(limit=name).inc()
    return ApiError(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded. Please try again later.",
                    headers={**headers, "Retry-After": str(retry_after)}, retry_after=retry_after,
                    details={"limit": name})


def enforce(rule: str, *key: str, scaled: bool = True) -> None:
    """Count one hit of `key` against an ad-hoc `rule` (e.g. "10/minute"); 429 past it.

    `scaled=False` exempts the rule from `HUB_RATE_LIMIT_SCALE`: for limits that protect an
    external system rather than the hub.
    """
    limits = runtime.get().rate_limits
    headers, retry_after, name = limits.check([(key[0], limits.item(rule) if scaled else parse(rule), key)])
    if retry_after is not None:
        raise too_many(retry_after, headers, name)


def enforce_login(email: str, ip: str | None, last_login_ip: Callable[[], str | None] = lambda: None) -> None:
    """Refuse a login attempt past the per-IP attempts or the failures counted against it (429).

    - `login-ip`: 30 attempts a minute per client IP, failed or not.
    - `login-email`: 10 failures in 15 minutes for the email, from any address: refuses every
      address except `last_login_ip()`, the one the account last signed in from successfully
      (called only when this limit is reached), so the owner is never locked out from there.
    - `login-email-ip`: 10 failures in 15 minutes for the email from this address: refuses it
      (the owner's own address included: guessing from there stays as slow).

    Failures are counted by `count_login_failure`; a refused attempt does not add to them, so a
    lockout is never renewed by the attempts it refuses.
    """
    enforce(LOGIN_ATTEMPTS_PER_IP, "login-ip", ip or "unknown")
    address = ip or "unknown"
    if _failures_exceeded(LOGIN_FAILURES_PER_EMAIL, "login-email", email) and address != last_login_ip():
        _refuse_failures(LOGIN_FAILURES_PER_EMAIL, "login-email", email)
    if _failures_exceeded(LOGIN_FAILURES_PER_EMAIL_AND_IP, "login-email-ip", email, address):
        _refuse_failures(LOGIN_FAILURES_PER_EMAIL_AND_IP, "login-email-ip", email, address)


def _failures_exceeded(rule: str, *key: str) -> bool:
    limits = runtime.get().rate_limits
    return not limits.limiter.test(limits.item(rule), *key)


def _refuse_failures(rule: str, *key: str) -> None:
    limits = runtime.get().rate_limits
    stats = limits.limiter.get_window_stats(limits.item(rule), *key)
    raise too_many(max(1, math.ceil(stats.reset_time - time.time())), {}, key[0])


def count_login_failure(email: str, ip: str | None = None) -> None:
    """Count a failed login against the email and against (email, client IP) (15-minute sliding windows)."""
    limits = runtime.get().rate_limits
    limits.limiter.hit(limits.item(LOGIN_FAILURES_PER_EMAIL), "login-email", email)
    limits.limiter.hit(limits.item(LOGIN_FAILURES_PER_EMAIL_AND_IP), "login-email-ip", email, ip or "unknown")


def enforce_register(email: str, ip: str | None) -> None:
    """Refuse a registration past the per-IP or per-email limits (429)."""
    enforce(REGISTRATIONS_PER_IP, "register-ip", ip or "unknown")
    enforce(REGISTRATIONS_PER_EMAIL, "register-email", email)


class RateLimitMiddleware:
    """Apply the plan and endpoint-class limits to every routed request, and stamp the headers.

    Runs after Connexion's security middleware, so the caller (tenant, plan) is known.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions") or {}
        operation_id = (extensions.get("connexion_routing") or {}).get("operation_id")
        if scope["type"] != "http" or operation_id is None:
            await self.app(scope, receive, send)
            return
        token_info = (extensions.get("connexion_context") or {}).get("token_info") or {}
        if not await self.refused(scope, receive, send, operation_id, token_info):
            await self.app(scope, receive, send)

    @classmethod
    async def refused(cls, scope: Scope, receive: Receive, send: Send, operation_id: str, token_info: dict) -> bool:
        """Count the routed request against its limits; answer 429 and return True past one of them.

        Notes the operation and tenant in `scope["state"]` for the request log line, and the
        rate-limit headers the request-context middleware stamps on whatever answers.
        """
        limits = runtime.get().rate_limits
        # For the request log line, written by the outermost middleware, which sees another scope copy.
        state = scope.setdefault("state", {})
        state["operation_id"], state["tenant_id"] = operation_id, token_info.get("tenantId")
        headers, retry_after, name = limits.check(cls._checks(limits, operation_id, token_info, scope))
        if retry_after is not None:
            error = too_many(retry_after, headers, name)
            refused = error_response(429, error.code, error.message, error.details, dict(error.headers), retry_after)
            await Response(refused.body, 429, headers=refused.headers, media_type="application/json")(scope, receive, send)
            return True
        # Stamped by the request-context middleware on whatever answers, errors included.
        state["response_headers"] = headers
        return False

    @staticmethod
    def _checks(limits: RateLimits, operation_id: str, token_info: dict, scope: Scope):
        tenant, plan = token_info.get("tenantId"), token_info.get("plan")
        caller = f"tenant:{tenant}" if tenant else (f"user:{token_info['userId']}" if token_info.get("userId")
                                                  else f"ip:{(scope.get('client') or ('unknown',))[0]}")
        checks = []
        if tenant and plan in limits.plan_limits:
            checks.append(("plan", limits.plan_item(plan), ("plan", caller)))
        klass = limits.operation_classes.get(operation_id)
        if klass in limits.class_limits:
            checks.append((klass, limits.class_item(klass), (klass, caller)))
        return checks
