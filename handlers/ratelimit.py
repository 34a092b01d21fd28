"""Rate limits, declared in the spec and applied in one place (the `limits` library).

- Per tenant, by plan, over 15 minutes (integration runbook 4.2): `x-plan-limits`.
- Per endpoint class, per minute (integration API "Rate Limits"): each operation's
  `x-rate-limit-class`, limits in `x-rate-limit-classes`; keyed by tenant (a super admin by
  user, an anonymous caller by IP).
- Login and register, per IP and per email (`enforce_login`, `enforce_register`): failed
  logins count against the email for 15 minutes only, so nobody can lock a victim out for good.

Counters live in memory, or in Redis when `REDIS_URL` is set so several processes share them.
Every limited response carries X-RateLimit-Limit / -Remaining / -Reset (unix seconds) of the
tightest applicable limit; a 429 adds Retry-After and `retryAfter`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers import runtime
from handlers.errors import ApiError, error_response
from handlers.observability import RATE_LIMIT_HITS

PLAN_WINDOW_MINUTES = 15
LOGIN_FAILURES_PER_EMAIL = "10/15minutes"
LOGIN_ATTEMPTS_PER_IP = "30/minute"
REGISTRATIONS_PER_IP = "10/hour"
REGISTRATIONS_PER_EMAIL = "5/hour"


@dataclass
class RateLimits:
    """The limiter and the spec's declarations. `scale` multiplies every limit (tests raise it)."""

    storage_uri: str = "memory://"
    plan_limits: dict[str, int] = field(default_factory=dict)
    class_limits: dict[str, int] = field(default_factory=dict)
    operation_classes: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0
    limiter: MovingWindowRateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = MovingWindowRateLimiter(storage_from_string(self.storage_uri))

    def item(self, rule: str | RateLimitItem) -> RateLimitItem:
        """Parse a rule ("10/minute") and apply `scale`."""
        item = parse(rule) if isinstance(rule, str) else rule
        amount = max(1, int(item.amount * self.scale))
        return type(item)(amount, item.multiples, item.namespace)

    def check(self, checks: list[tuple[str, RateLimitItem, tuple[str, ...]]]) -> tuple[dict[str, str], int | None, str]:
        """Hit every (name, limit, key) and return (headers, retry_after or None, name of the limit hit).

        Counters of limits that were not exceeded are still incremented; a refused request is
        counted against the limits it passed, like any other.
        """
        tightest: tuple[int, int, int] | None = None
        refused: tuple[int, str] | None = None
        for name, limit, key in checks:
            allowed = self.limiter.hit(limit, *key)
            stats = self.limiter.get_window_stats(limit, *key)
            reset = math.ceil(stats.reset_time)
            if tightest is None or stats.remaining < tightest[1]:
                tightest = (limit.amount, stats.remaining, reset)
            if not allowed and refused is None:
                refused = (max(1, math.ceil(stats.reset_time - time.time())), name)
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


def enforce_login(email: str, ip: str | None) -> None:
    """Refuse a login attempt past the per-IP attempts or the per-email failures (429).

    Failures are counted by `count_login_failure`; a refused attempt does not add to them.
    """
    limits = runtime.get().rate_limits
    enforce(LOGIN_ATTEMPTS_PER_IP, "login-ip", ip or "unknown")
    failures = limits.item(LOGIN_FAILURES_PER_EMAIL)
    if not limits.limiter.test(failures, "login-email", email):
        stats = limits.limiter.get_window_stats(failures, "login-email", email)
        raise too_many(max(1, math.ceil(stats.reset_time - time.time())), {}, "login-email")


def count_login_failure(email: str) -> None:
    """Count a failed login against the email (15-minute moving window)."""
    limits = runtime.get().rate_limits
    limits.limiter.hit(limits.item(LOGIN_FAILURES_PER_EMAIL), "login-email", email)


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
        limits = runtime.get().rate_limits
        token_info = (extensions.get("connexion_context") or {}).get("token_info") or {}
        # For the request log line, written by the outermost middleware, which sees another scope copy.
        state = scope.setdefault("state", {})
        state["operation_id"], state["tenant_id"] = operation_id, token_info.get("tenantId")
        headers, retry_after, name = limits.check(self._checks(limits, operation_id, token_info, scope))
        if retry_after is not None:
            error = too_many(retry_after, headers, name)
            refused = error_response(429, error.code, error.message, error.details, dict(error.headers), retry_after)
            await Response(refused.body, 429, headers=refused.headers, media_type="application/json")(scope, receive, send)
            return
        # Stamped by the request-context middleware on whatever answers, errors included.
        state["response_headers"] = headers
        await self.app(scope, receive, send)

    @staticmethod
    def _checks(limits: RateLimits, operation_id: str, token_info: dict, scope: Scope):
        tenant, plan = token_info.get("tenantId"), token_info.get("plan")
        caller = f"tenant:{tenant}" if tenant else (f"user:{token_info['userId']}" if token_info.get("userId")
                                                  else f"ip:{(scope.get('client') or ('unknown',))[0]}")
        checks = []
        if tenant and plan in limits.plan_limits:
            window = RateLimitItemPerMinute(limits.plan_limits[plan], PLAN_WINDOW_MINUTES)
            checks.append(("plan", limits.item(window), ("plan", caller)))
        klass = limits.operation_classes.get(operation_id)
        if klass in limits.class_limits:
            checks.append((klass, limits.item(RateLimitItemPerMinute(limits.class_limits[klass])), (klass, caller)))
        return checks
