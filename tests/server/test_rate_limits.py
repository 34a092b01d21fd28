"""Rate limits (server/ratelimit.py): per plan, per endpoint class, and the login/register throttles.

conftest scales every limit up (HUB_RATE_LIMIT_SCALE=1000) so that ordinary tests never meet
one. The tests here whose subject is a limit put the scale back to 1 for their own duration,
after their accounts exist, and use fresh tenants and emails (counters are keyed by them).
Limits keyed by client IP (login and register) are met through a second TestClient with an
address of its own, so the session client's "testclient" counters stay untouched.
The counters themselves (sliding windows, inline expiry, no thread) are tested on their own
`RateLimits` with a clock the test moves (`Clock`), no app involved.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
import uuid

import pytest
from limits import RateLimitItemPerMinute
from starlette.testclient import TestClient

from persistence import users
from persistence.db import transaction
from server import ratelimit, runtime
from server.app import API_SPEC, HTTP_METHODS, ROOT_SPEC, load_spec
from server.errors import ApiError
from tests import factories
from tests.handlers.test_tenant_integrations import assert_error

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
INTEGRATIONS = "/api/v1/tenant/integrations"
TENANTS = "/api/v1/admin/tenants"
LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
API, ROOT = load_spec(API_SPEC), load_spec(ROOT_SPEC)


def unscaled(monkeypatch) -> None:
    """Put every limit back to the spec's figure for the rest of the test."""
    monkeypatch.setattr(runtime.get().rate_limits, "scale", 1)


@pytest.fixture
def own_address_client(app):
    """A client calling from an address no other test uses (for limits keyed by client IP)."""
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    return TestClient(app, raise_server_exceptions=False, client=(address, 50000))


def limit_headers(response) -> tuple[int, int, int]:
    """Return (limit, remaining, reset) after checking each is an integer header."""
    values = []
    for name in LIMIT_HEADERS:
        assert name in response.headers, (name, dict(response.headers))
        assert re.fullmatch(r"\d+", response.headers[name]), (name, response.headers[name])
        values.append(int(response.headers[name]))
    return tuple(values)


def assert_too_many(response, limit: str) -> int:
    """Assert a 429 RATE_LIMIT_EXCEEDED naming `limit`; return its retryAfter (equal to Retry-After)."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    retry_after = error.get("retryAfter")
    assert isinstance(retry_after, int) and retry_after > 0, error
    assert response.headers["Retry-After"] == str(retry_after)
    assert response.json() == {"error": {
        "code": "RATE_LIMIT_EXCEEDED", "message": "Rate limit exceeded. Please try again later.",
        "retryAfter": retry_after, "details": {"limit": limit}, "requestId": response.headers["X-Request-ID"]}}
    return retry_after


def spec_operations():
    for name, spec in (("api", API), ("root", ROOT)):
        for path, item in spec["paths"].items():
            for method in HTTP_METHODS:
                if method in item:
                    yield pytest.param(spec, item[method], id=f"{name}:{method.upper()} {path}")


class TestDeclarations:
    @pytest.mark.parametrize("spec,operation", list(spec_operations()))
    def test_every_operation_declares_a_known_class(self, spec, operation):
        klass = operation.get("x-rate-limit-class")

        assert klass, f"{operation['operationId']} declares no x-rate-limit-class"
        assert klass in spec["x-rate-limit-classes"], f"{operation['operationId']}: unknown class {klass!r}"

    def test_every_plan_has_a_limit(self):
        plans = API["components"]["schemas"]["Plan"]["enum"]

        assert sorted(API["x-plan-limits"]) == sorted(plans)
        assert API["x-plan-limits"]["free"] == 100

    def test_runtime_limits_are_the_declared_ones(self, app):
        limits = runtime.get().rate_limits

        assert limits.plan_limits == API["x-plan-limits"]
        assert limits.class_limits == API["x-rate-limit-classes"] | ROOT["x-rate-limit-classes"]
        assert limits.operation_classes["get_health"] == "health"
        assert limits.operation_classes["get_connection"] == "connection"


class TestRateLimitHeaders:
    @pytest.mark.parametrize("call", [
        pytest.param(lambda c, admin, member: c.get(INTEGRATIONS, headers=admin.headers), id="200 list"),
        pytest.param(lambda c, admin, member: c.get("/api/v1/auth/me", headers=member.headers), id="200 me"),
        pytest.param(lambda c, admin, member: c.post(INTEGRATIONS, json={"name": "x"}, headers=admin.headers),
                     id="400 invalid body"),
        pytest.param(lambda c, admin, member: c.get(f"{INTEGRATIONS}/{uuid.uuid4()}", headers=admin.headers),
                     id="404 unknown id"),
        pytest.param(lambda c, admin, member: c.get("/api/v1/tenant/users", headers=member.headers),
                     id="403 denied"),
        pytest.param(lambda c, admin, member: c.get("/health"), id="200 anonymous health"),
        pytest.param(lambda c, admin, member: c.post(LOGIN, json={"email": member.email, "password": "wrong-password"}),
                     id="401 failed login"),
    ])
    def test_routed_responses_carry_the_headers(self, client, tenant_admin, member, call):
        before = time.time()

        response = call(client, tenant_admin, member)

        limit, remaining, reset = limit_headers(response)
        assert 0 <= remaining < limit
        assert reset >= before, (reset, before)  # unix seconds, not a delay

    def test_reset_is_in_the_future_and_remaining_decreases(self, client, tenant_admin):
        responses = [client.get(INTEGRATIONS, headers=tenant_admin.headers) for _ in range(3)]

        headers = [limit_headers(r) for r in responses]
        assert all(r.status_code == 200 for r in responses)
        assert len({limit for limit, _, _ in headers}) == 1
        assert [remaining for _, remaining, _ in headers] == [headers[0][1], headers[0][1] - 1, headers[0][1] - 2]
        now = time.time()
        assert all(now < reset <= now + 15 * 60 + 1 for _, _, reset in headers), (now, headers)

    def test_limit_is_the_free_plan_at_scale_one(self, client, tenant_admin, monkeypatch):
        unscaled(monkeypatch)

        response = client.get(INTEGRATIONS, headers=tenant_admin.headers)

        limit, remaining, _ = limit_headers(response)
        # free plan: 100 per 15 minutes, tighter than the `integration` class's 200 per minute
        assert limit == 100 and remaining < 100


class TestEndpointClassLimit:
    def test_connection_class_allows_50_a_minute(self, client, tenant_admin, monkeypatch):
        url = f"{INTEGRATIONS}/{uuid.uuid4()}/connection"  # class `connection`; a 404 counts like any call
        unscaled(monkeypatch)

        answers = [client.get(url, headers=tenant_admin.headers) for _ in range(50)]
        refused = client.get(url, headers=tenant_admin.headers)

        assert {r.status_code for r in answers} == {404}
        retry_after = assert_too_many(refused, "connection")
        assert retry_after <= 60
        assert limit_headers(refused)[:2] == (50, 0)

    def test_other_classes_of_the_tenant_still_answer(self, client, tenant_admin, monkeypatch):
        url = f"{INTEGRATIONS}/{uuid.uuid4()}/connection"
        unscaled(monkeypatch)
        for _ in range(50):
            client.get(url, headers=tenant_admin.headers)
        assert client.get(url, headers=tenant_admin.headers).status_code == 429

        response = client.get(INTEGRATIONS, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text

    def test_another_tenant_is_unaffected(self, client, tenant_admin, other_tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        for _ in range(50):
            client.get(f"{INTEGRATIONS}/{uuid.uuid4()}/connection", headers=tenant_admin.headers)
        assert client.get(f"{INTEGRATIONS}/{uuid.uuid4()}/connection", headers=tenant_admin.headers).status_code == 429

        response = client.get(f"{INTEGRATIONS}/{uuid.uuid4()}/connection", headers=other_tenant_admin.headers)

        assert response.status_code == 404, response.text


class TestPlanLimit:
    def test_free_tenant_is_refused_past_100_requests(self, client, tenant_admin, other_tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        first = client.get(INTEGRATIONS, headers=tenant_admin.headers)
        used = 100 - limit_headers(first)[1]  # setup requests of this tenant count too

        answers = [client.get(INTEGRATIONS, headers=tenant_admin.headers) for _ in range(100 - used)]
        refused = client.get(INTEGRATIONS, headers=tenant_admin.headers)
        other = client.get(INTEGRATIONS, headers=other_tenant_admin.headers)

        assert {r.status_code for r in answers} == {200}
        assert limit_headers(answers[-1])[:2] == (100, 0)
        retry_after = assert_too_many(refused, "plan")
        assert retry_after <= 15 * 60
        assert other.status_code == 200, other.text

    def test_upgrading_the_plan_lifts_the_limit_at_once(self, client, super_admin, tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        remaining = limit_headers(client.get(INTEGRATIONS, headers=tenant_admin.headers))[1]
        for _ in range(remaining):
            client.get(INTEGRATIONS, headers=tenant_admin.headers)
        assert client.get(INTEGRATIONS, headers=tenant_admin.headers).status_code == 429
        monkeypatch.setattr(runtime.get().rate_limits, "scale", 1000)  # the super admin's own calls
        upgraded = client.patch(f"{TENANTS}/{tenant_admin.tenant_id}", json={"plan": "starter"},
                                headers=super_admin.headers)
        assert upgraded.status_code == 200, upgraded.text
        unscaled(monkeypatch)

        response = client.get(INTEGRATIONS, headers=tenant_admin.headers)

        assert response.status_code == 200, response.text
        # starter allows 500 per 15 minutes; the `integration` class (200 a minute) is now the tightest
        limit, remaining, _ = limit_headers(response)
        assert limit == 200 and 0 < remaining < 100


class TestLoginThrottle:
    def test_eleventh_attempt_after_ten_failures_is_refused(self, own_address_client, tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        wrong = {"email": tenant_admin.email, "password": "not-the-password"}

        failures = [own_address_client.post(LOGIN, json=wrong) for _ in range(10)]
        refused = own_address_client.post(LOGIN, json={"email": tenant_admin.email, "password": tenant_admin.password})

        for response in failures:
            assert_error(response, 401, "INVALID_CREDENTIALS", message="Invalid email or password", details=None)
        retry_after = assert_too_many(refused, "login-email")
        assert retry_after <= 15 * 60

    def test_email_is_matched_case_insensitively(self, own_address_client, tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        for _ in range(10):
            own_address_client.post(LOGIN, json={"email": tenant_admin.email, "password": "not-the-password"})

        refused = own_address_client.post(LOGIN, json={"email": tenant_admin.email.upper(),
                                                       "password": tenant_admin.password})

        assert_too_many(refused, "login-email")

    def test_another_email_is_unaffected(self, own_address_client, tenant_admin, member, monkeypatch):
        unscaled(monkeypatch)
        for _ in range(10):
            own_address_client.post(LOGIN, json={"email": tenant_admin.email, "password": "not-the-password"})
        assert own_address_client.post(LOGIN, json={"email": tenant_admin.email, "password": "x" * 12}).status_code == 429

        response = own_address_client.post(LOGIN, json={"email": member.email, "password": member.password})

        assert response.status_code == 200, response.text

    def test_successful_logins_do_not_count(self, own_address_client, tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        good = {"email": tenant_admin.email, "password": tenant_admin.password}

        successes = [own_address_client.post(LOGIN, json=good) for _ in range(12)]
        failures = [own_address_client.post(LOGIN, json=good | {"password": "not-the-password"}) for _ in range(9)]
        still_allowed = own_address_client.post(LOGIN, json=good)

        assert [r.status_code for r in successes] == [200] * 12
        assert [r.status_code for r in failures] == [401] * 9
        assert still_allowed.status_code == 200, still_allowed.text

    def test_unknown_email_failures_are_throttled_too(self, own_address_client, monkeypatch):
        unscaled(monkeypatch)
        ghost = {"email": f"{factories.unique('ghost')}@example.com", "password": "whatever-password"}

        failures = [own_address_client.post(LOGIN, json=ghost) for _ in range(10)]
        refused = own_address_client.post(LOGIN, json=ghost)

        assert [r.status_code for r in failures] == [401] * 10
        assert_too_many(refused, "login-email")

    def test_thirty_attempts_a_minute_per_ip(self, own_address_client, monkeypatch):
        unscaled(monkeypatch)
        # distinct emails, so the per-email failure limit is never what refuses
        attempts = [own_address_client.post(LOGIN, json={"email": f"{factories.unique('ip')}@example.com",
                                                         "password": "whatever-password"}) for _ in range(30)]
        refused = own_address_client.post(LOGIN, json={"email": f"{factories.unique('ip')}@example.com",
                                                       "password": "whatever-password"})

        assert [r.status_code for r in attempts] == [401] * 30
        # The endpoint class `auth` (30 a minute per IP for anonymous callers) is counted before
        # the login handler's own per-IP throttle (also 30 a minute); either may be the one named.
        assert refused.json()["error"].get("details", {}).get("limit") in ("auth", "login-ip"), refused.text
        assert_too_many(refused, refused.json()["error"]["details"]["limit"])

    def test_throttle_is_applied_by_enforce_login_per_key(self, app, monkeypatch):
        unscaled(monkeypatch)
        email = f"{factories.unique('direct')}@example.com"
        for _ in range(10):
            ratelimit.count_login_failure(email)

        with pytest.raises(ApiError) as refused:
            ratelimit.enforce_login(email, f"192.0.2.{random.randrange(1, 255)}-{uuid.uuid4().hex}")
        ratelimit.enforce_login(f"{factories.unique('direct')}@example.com", f"192.0.2.1-{uuid.uuid4().hex}")

        assert (refused.value.status, refused.value.code, refused.value.details) == (
            429, "RATE_LIMIT_EXCEEDED", {"limit": "login-email"})
        assert 0 < refused.value.retry_after <= 15 * 60


class TestNoLockout:
    """Issue 11 item 3: failures from elsewhere never lock the owner out at the address it signs in from."""

    @staticmethod
    def _from(app, address: str) -> TestClient:
        return TestClient(app, raise_server_exceptions=False, client=(address, 50000))

    @staticmethod
    def _addresses(count: int) -> list[str]:
        return [f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}" for _ in range(count)]

    def test_failures_from_elsewhere_do_not_lock_out_the_last_signed_in_address(self, app, tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        home, attacker = self._addresses(2)
        good = {"email": tenant_admin.email, "password": tenant_admin.password}
        assert self._from(app, home).post(LOGIN, json=good).status_code == 200
        failures = [self._from(app, attacker).post(LOGIN, json=good | {"password": "not-the-password"})
                    for _ in range(10)]

        refused = self._from(app, attacker).post(LOGIN, json=good)
        owner = self._from(app, home).post(LOGIN, json=good)

        assert [r.status_code for r in failures] == [401] * 10
        assert_too_many(refused, "login-email")
        assert owner.status_code == 200, owner.text

    def test_failures_spread_over_addresses_slow_down_every_unknown_address(self, app, tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        *attackers, newcomer = self._addresses(6)
        wrong = {"email": tenant_admin.email, "password": "not-the-password"}
        for address in attackers:
            for _ in range(2):
                assert self._from(app, address).post(LOGIN, json=wrong).status_code == 401

        refused = self._from(app, newcomer).post(LOGIN, json={"email": tenant_admin.email,
                                                              "password": tenant_admin.password})

        assert_too_many(refused, "login-email")

    def test_guessing_from_the_owners_address_is_throttled_per_address(self, app, tenant_admin, monkeypatch):
        unscaled(monkeypatch)
        home, = self._addresses(1)
        good = {"email": tenant_admin.email, "password": tenant_admin.password}
        assert self._from(app, home).post(LOGIN, json=good).status_code == 200
        for _ in range(10):
            self._from(app, home).post(LOGIN, json=good | {"password": "not-the-password"})

        refused = self._from(app, home).post(LOGIN, json=good)

        assert_too_many(refused, "login-email-ip")

    def test_the_last_signed_in_address_is_recorded(self, app, tenant_admin):
        home, = self._addresses(1)

        self._from(app, home).post(LOGIN, json={"email": tenant_admin.email, "password": tenant_admin.password})

        with transaction() as session:
            assert users.last_login_ip(session, email=tenant_admin.email.upper()) == home


class TestRegisterThrottle:
    def _body(self, email: str) -> dict:
        return {"email": email, "password": factories.PASSWORD, "name": "Reg Ister", "tenantName": factories.unique("T ")}

    def test_sixth_registration_of_one_email_in_an_hour_is_refused(self, own_address_client, monkeypatch):
        unscaled(monkeypatch)
        email = f"{factories.unique('reg')}@example.com"

        attempts = [own_address_client.post(REGISTER, json=self._body(email)) for _ in range(5)]
        refused = own_address_client.post(REGISTER, json=self._body(email))

        assert [r.status_code for r in attempts] == [201, 409, 409, 409, 409], [r.text for r in attempts]
        retry_after = assert_too_many(refused, "register-email")
        assert retry_after <= 3600

    def test_another_email_is_unaffected(self, own_address_client, monkeypatch):
        unscaled(monkeypatch)
        email = f"{factories.unique('reg')}@example.com"
        for _ in range(5):
            own_address_client.post(REGISTER, json=self._body(email))
        assert own_address_client.post(REGISTER, json=self._body(email)).status_code == 429

        response = own_address_client.post(REGISTER, json=self._body(f"{factories.unique('reg')}@example.com"))

        assert response.status_code == 201, response.text

    def test_ten_registrations_an_hour_per_ip(self, own_address_client, monkeypatch):
        unscaled(monkeypatch)

        attempts = [own_address_client.post(REGISTER, json=self._body(f"{factories.unique('reg')}@example.com"))
                    for _ in range(10)]
        refused = own_address_client.post(REGISTER, json=self._body(f"{factories.unique('reg')}@example.com"))

        assert [r.status_code for r in attempts] == [201] * 10
        assert_too_many(refused, "register-ip")


class Clock:
    """A clock the test moves by hand, given to `RateLimits(clock=...)`."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limit_check(amount: int, caller: str = "tenant:a", name: str = "integration"):
    """One (name, per-minute limit, key) as the middleware builds it."""
    return name, RateLimitItemPerMinute(amount), (name, caller)


class TestSlidingWindow:
    def test_refuses_past_the_limit_and_recovers_as_the_window_slides(self):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        check, start = [limit_check(10)], clock.now

        answers = [limits.check(check) for _ in range(10)]
        refused = limits.check(check)
        clock.advance(59.5)
        still_refused = limits.check(check)
        clock.advance(0.51)  # the first window is over: its 10 hits now weigh 10 * 59.99/60, floored to 9
        after_turn = [limits.check(check) for _ in range(2)]
        clock.advance(6)  # the previous window weighs one hit less every 60/10 seconds
        one_more = limits.check(check)
        clock.advance(120)  # both windows over
        fresh = [limits.check(check) for _ in range(11)]

        assert [(h["X-RateLimit-Remaining"], r) for h, r, _ in answers] == [(str(n), None) for n in range(9, -1, -1)]
        assert refused == ({"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": str(int(start + 60))}, 60, "integration")
        assert still_refused[1:] == (1, "integration")
        assert [r for _, r, _ in after_turn] == [None, 6]  # the next hit weighs in after 59.99 % 6 s
        assert one_more[1] is None
        assert [r for _, r, _ in fresh] == [None] * 10 + [60]

    def test_a_refused_hit_is_not_counted(self):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        for _ in range(10):
            limits.check([limit_check(10)])
        refusals = [limits.check([limit_check(10)]) for _ in range(5)]

        clock.advance(60.01)
        after = limits.check([limit_check(10)])

        assert all(r is not None for _, r, _ in refusals)
        assert after[1] is None  # only the 10 counted hits weigh (9.998 -> 9), not the 15 attempts

    def test_each_key_counts_apart(self):
        limits = ratelimit.RateLimits(clock=Clock())
        for _ in range(3):
            limits.check([limit_check(3, "tenant:busy")])

        busy = limits.check([limit_check(3, "tenant:busy")])
        quiet = limits.check([limit_check(3, "tenant:quiet")])

        assert busy[1:] == (60, "integration")
        assert (quiet[0]["X-RateLimit-Remaining"], quiet[1]) == ("2", None)

    def test_stats_are_the_librarys_window_stats(self):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        for _ in range(7):
            limits.check([limit_check(10)])
        clock.advance(75)  # 7 hits in the previous window (weight 45/60), none yet in this one
        for _ in range(2):
            limits.check([limit_check(10)])

        headers, _, _ = limits.check([limit_check(10)])
        library = limits.limiter.get_window_stats(RateLimitItemPerMinute(10), "integration", "tenant:a")

        # 7 * 45/60 + 3 = 8.25: two left; the previous window's weight drops by one hit in 45 % (60/7) s
        assert headers["X-RateLimit-Remaining"] == str(library.remaining) == "2"
        assert int(headers["X-RateLimit-Reset"]) == math.ceil(clock.now + 45 % (60 / 7))
        assert library.reset_time - time.time() == pytest.approx(45 % (60 / 7), abs=0.5)


class TestCheckHeaders:
    def test_headers_are_those_of_the_tightest_limit(self):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        plan = ("plan", RateLimitItemPerMinute(100, 15), ("plan", "tenant:a"))

        first, _, _ = limits.check([plan, limit_check(5)])
        start = clock.now
        clock.advance(10)
        for _ in range(3):
            limits.check([plan, limit_check(5)])
        last, _, _ = limits.check([plan, limit_check(5)])

        reset = str(int(start + 60))  # a minute after the window's first hit, not after the last one
        assert first == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4", "X-RateLimit-Reset": reset}
        assert last == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}

    def test_plan_headers_when_the_plan_is_tightest(self):
        limits = ratelimit.RateLimits(clock=Clock())
        plan = ("plan", RateLimitItemPerMinute(3, 15), ("plan", "tenant:a"))

        headers, retry_after, _ = limits.check([plan, limit_check(50)])

        assert headers == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "2",
                           "X-RateLimit-Reset": str(1_800_000_000 + 15 * 60)}
        assert retry_after is None

    def test_limits_passed_count_even_when_another_refuses(self):
        limits = ratelimit.RateLimits(clock=Clock())
        plan_item = RateLimitItemPerMinute(100, 15)
        plan = ("plan", plan_item, ("plan", "tenant:a"))

        answers = [limits.check([plan, limit_check(2)]) for _ in range(3)]

        assert [r for _, r, _ in answers] == [None, None, 60]
        assert answers[-1][2] == "integration"
        assert answers[-1][0]["X-RateLimit-Limit"] == "2"
        assert limits.limiter.get_window_stats(plan_item, "plan", "tenant:a").remaining == 97


class TestInMemoryCounters:
    def test_hits_start_no_thread(self, monkeypatch):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        failures = limits.item(ratelimit.LOGIN_FAILURES_PER_EMAIL)
        threads_before = threading.active_count()

        def no_thread(thread):
            raise AssertionError(f"a thread was started: {thread!r}")

        monkeypatch.setattr(threading.Thread, "start", no_thread)
        for round_ in range(3):
            for caller in range(200):
                limits.check([limit_check(50, f"tenant:{caller}"), limit_check(5, f"tenant:{caller}", "plan")])
                limits.limiter.hit(failures, "login-email", f"{caller}@example.com")
                limits.limiter.test(failures, "login-email", f"{caller}@example.com")
            time.sleep(0.05)  # a timer-driven expiry would have finished its run and want a new thread
            clock.advance(3600)  # every record expires: the sweep and the inline expiry both run
        monkeypatch.undo()

        assert threading.active_count() == threads_before

    def test_expired_records_are_dropped_once_their_windows_pass(self):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        storage = limits.limiter.storage
        for caller in range(1000):
            limits.check([limit_check(50, f"tenant:{caller}")])
        held = len(storage)

        clock.advance(121)  # a record lives two windows from its first hit
        for _ in range(600):
            limits.check([limit_check(5000, "tenant:busy")])

        assert held == 1000
        assert len(storage) == 1  # the busy tenant's: one record however many hits

    def test_memory_stays_bounded_under_a_stream_of_new_keys(self):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        storage = limits.limiter.storage
        sizes = []
        for caller in range(5000):
            limits.check([limit_check(50, f"ip:{caller}")])  # a new key every second
            clock.advance(1)
            sizes.append(len(storage))

        # 120 records are alive at any time (two one-minute windows); expired ones are swept faster
        # than new ones come, so the total stays under twice that, not 5000.
        assert max(sizes[-1000:]) < 2 * 120, max(sizes[-1000:])

    def test_an_expired_key_starts_afresh(self):
        clock = Clock()
        limits = ratelimit.RateLimits(clock=clock)
        for _ in range(5):
            limits.check([limit_check(5)])
        clock.advance(121)

        headers, retry_after, _ = limits.check([limit_check(5)])

        assert (headers["X-RateLimit-Remaining"], retry_after) == ("4", None)
        assert headers["X-RateLimit-Reset"] == str(int(clock.now + 60))

    def test_concurrent_hits_count_exactly(self):
        limits = ratelimit.RateLimits(clock=Clock())
        answers: list[tuple[dict, int | None, str]] = []

        def hammer():
            answers.extend(limits.check([limit_check(1000)]) for _ in range(250))

        workers = [threading.Thread(target=hammer) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

        allowed = [int(h["X-RateLimit-Remaining"]) for h, r, _ in answers if r is None]
        assert sorted(allowed) == list(range(1000))  # each allowed hit saw its own count
        assert len(answers) - len(allowed) == 1000

    def test_other_backends_take_the_generic_path_with_the_same_result(self):
        hits = [("integration/a", 3, 60)] * 4
        pipelined, generic = ratelimit.WindowCounters(clock=Clock()), ratelimit.WindowCounters(clock=Clock())

        assert ratelimit._hit_one_by_one(generic, hits) == pipelined.hit_sliding_windows(hits)
        assert [counted for counted, _ in pipelined.hit_sliding_windows(hits)] == [False] * 4
