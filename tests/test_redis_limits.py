"""Rate limits shared through Redis (`REDIS_URL`): several hub processes, one set of counters.

Two `RateLimits` built from the same spec and the same Redis stand for two hub processes: a hit
counted by one is seen by the other, and a limit is enforced on their hits together. Needs the
`redis-server` binary: skipped with a visible reason without it, but mandatory in CI.
"""

from __future__ import annotations

import math
import socket
import time
import uuid

import pytest
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from redis.connection import AbstractConnection

from server import ratelimit, runtime
from server.app import API_SPEC, ROOT_SPEC, _merged_limits, load_spec
from tests import factories
from tests.redis_server import RedisServer, redis_or_skip


@pytest.fixture(scope="module")
def redis_server():
    with redis_or_skip("rate-limit") as server:
        yield server


@pytest.fixture(scope="module")
def spec() -> dict:
    """The limits of both contracts, merged as the app factory merges them."""
    return _merged_limits(load_spec(API_SPEC), load_spec(ROOT_SPEC))


@pytest.fixture
def hubs(redis_server, spec) -> tuple[ratelimit.RateLimits, ratelimit.RateLimits]:
    """Two hub processes' limits on the same Redis, at the spec's own figures."""
    return tuple(ratelimit.from_spec(spec, storage_uri=redis_server.url, scale=1) for _ in range(2))


def class_check(hub: ratelimit.RateLimits, klass: str, caller: str):
    """The (name, limit, key) the middleware checks for an operation of `klass` by `caller`."""
    return klass, hub.item(RateLimitItemPerMinute(hub.class_limits[klass])), (klass, caller)


def plan_check(hub: ratelimit.RateLimits, plan: str, caller: str):
    """The (name, limit, key) the middleware checks for a tenant of `plan`."""
    window = RateLimitItemPerMinute(hub.plan_limits[plan], ratelimit.PLAN_WINDOW_MINUTES)
    return "plan", hub.item(window), ("plan", caller)


class TestRedisServerHelper:
    def test_starts_answers_and_stops(self, redis_server):
        """A second throwaway server beside the module's: its own port, gone after stop()."""
        server = RedisServer().start()
        port = server.port
        try:
            assert port != redis_server.port
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                assert sock.recv(64).startswith(b"+PONG")
        finally:
            server.stop()

        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert (server.port, server.process) == (None, None)
        server.stop()  # a second stop does nothing


class TestSharedCounters:
    def test_both_processes_use_redis(self, hubs, redis_server):
        for hub in hubs:
            assert type(hub.limiter.storage).__name__.lower().startswith("redis"), type(hub.limiter.storage)
            assert hub.class_limits["connection"] == 50

    def test_remaining_decreases_across_processes(self, hubs):
        caller = f"tenant:{uuid.uuid4()}"

        remaining = []
        for hub in hubs + hubs + hubs:
            headers, retry_after, _ = hub.check([class_check(hub, "connection", caller)])
            assert retry_after is None
            remaining.append(int(headers["X-RateLimit-Remaining"]))

        assert remaining == [49, 48, 47, 46, 45, 44]
        assert {int(hub.check([class_check(hub, "connection", caller)])[0]["X-RateLimit-Limit"]) for hub in hubs} == {50}

    def test_limit_is_enforced_jointly(self, hubs):
        first, second = hubs
        caller = f"tenant:{uuid.uuid4()}"
        for _ in range(25):
            assert first.check([class_check(first, "connection", caller)])[1] is None
            assert second.check([class_check(second, "connection", caller)])[1] is None

        refused_here = first.check([class_check(first, "connection", caller)])
        refused_there = second.check([class_check(second, "connection", caller)])

        for headers, retry_after, name in (refused_here, refused_there):
            assert name == "connection"
            assert 0 < retry_after <= 60
            assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("50", "0")

    def test_other_callers_are_unaffected(self, hubs):
        first, second = hubs
        busy, quiet = f"tenant:{uuid.uuid4()}", f"tenant:{uuid.uuid4()}"
        for _ in range(50):
            first.check([class_check(first, "connection", busy)])
        assert second.check([class_check(second, "connection", busy)])[1] is not None

        headers, retry_after, _ = second.check([class_check(second, "connection", quiet)])

        assert retry_after is None
        assert headers["X-RateLimit-Remaining"] == "49"

    def test_login_failures_counted_by_one_process_refuse_in_the_other(self, hubs):
        first, second = hubs
        email = f"{factories.unique('shared')}@example.com"
        failures = first.item(ratelimit.LOGIN_FAILURES_PER_EMAIL)
        for _ in range(10):
            first.limiter.hit(failures, "login-email", email)

        assert second.limiter.test(second.item(ratelimit.LOGIN_FAILURES_PER_EMAIL), "login-email", email) is False
        assert second.limiter.test(second.item(ratelimit.LOGIN_FAILURES_PER_EMAIL), "login-email",
                                   f"{factories.unique('other')}@example.com") is True


class TestHubOnRedis:
    def test_requests_served_by_one_hub_count_in_the_other(self, client, tenant_admin, hubs, monkeypatch):
        first, second = hubs
        monkeypatch.setattr(runtime.get(), "rate_limits", first)  # this process now counts in Redis

        responses = [client.get("/api/v1/tenant/integrations", headers=tenant_admin.headers) for _ in range(3)]

        assert [r.status_code for r in responses] == [200] * 3
        window = second.limiter.get_window_stats(second.item(RateLimitItemPerMinute(200)), "integration",
                                                 f"tenant:{tenant_admin.tenant_id}")
        assert window.remaining == 200 - 3
        plan = second.item(RateLimitItemPerMinute(second.plan_limits["free"], ratelimit.PLAN_WINDOW_MINUTES))
        assert second.limiter.get_window_stats(plan, "plan", f"tenant:{tenant_admin.tenant_id}").remaining == 100 - 3
        assert [int(r.headers["X-RateLimit-Remaining"]) for r in responses] == [99, 98, 97]


class TestRedisCounting:
    def test_a_request_is_one_round_trip(self, hubs, monkeypatch):
        hub = hubs[0]
        caller = f"tenant:{uuid.uuid4()}"
        checks = [plan_check(hub, "free", caller), class_check(hub, "connection", caller)]
        hub.check(checks)  # the first call may load the scripts
        sent = []
        send = AbstractConnection.send_packed_command

        def counted(connection, *args, **kwargs):
            sent.append(args)
            return send(connection, *args, **kwargs)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
        headers, retry_after, _ = hub.check(checks)
        monkeypatch.undo()

        assert len(sent) == 1  # both limits' hit and read-back in one pipeline
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"], retry_after) == ("50", "48", None)

    def test_headers_of_a_first_hit(self, hubs):
        hub = hubs[0]
        caller = f"tenant:{uuid.uuid4()}"
        before = time.time()

        headers, retry_after, _ = hub.check([plan_check(hub, "free", caller), class_check(hub, "connection", caller)])

        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"], retry_after) == ("50", "49", None)
        # the minute's window ends a minute after this first hit
        assert math.floor(before + 59) <= int(headers["X-RateLimit-Reset"]) <= math.ceil(time.time() + 60)

    @pytest.mark.parametrize("reloaded", [(), ("lua_acquire_sliding_window",)], ids=["both missing", "read missing"])
    def test_scripts_flushed_from_redis_are_loaded_again_without_counting_twice(self, hubs, reloaded):
        hub = hubs[0]
        caller = f"tenant:{uuid.uuid4()}"
        for _ in range(2):
            hub.check([class_check(hub, "connection", caller)])
        connection = hub.limiter.storage.get_connection()
        connection.script_flush()  # as after a Redis restart
        for script in reloaded:  # the hit then succeeds in the pipeline and only the read-back fails
            connection.script_load(getattr(hub.limiter.storage, script).script)

        headers, retry_after, _ = hub.check([class_check(hub, "connection", caller)])

        assert (headers["X-RateLimit-Remaining"], retry_after) == ("47", None)
        stats = hub.limiter.get_window_stats(hub.item(RateLimitItemPerMinute(50)), "connection", caller)
        assert stats.remaining == 47

    def test_a_limit_holds_one_counter_however_many_hits(self, hubs):
        hub = hubs[0]
        caller = f"tenant:{uuid.uuid4()}"
        for _ in range(60):
            hub.check([class_check(hub, "connection", caller)])
        connection = hub.limiter.storage.get_connection()

        keys = connection.keys(f"*{caller}*")

        assert len(keys) == 1, keys  # the current window's counter (the previous one once it turns over)
        assert connection.type(keys[0]) == b"string"
        assert int(connection.get(keys[0])) == 50  # refused hits are not counted
        assert 0 < connection.ttl(keys[0]) <= 120

    def test_refuses_past_the_limit_and_recovers_when_the_window_turns_over(self, hubs):
        hub = hubs[0]
        check = [("burst", RateLimitItemPerSecond(5), ("burst", f"tenant:{uuid.uuid4()}"))]
        answers = [hub.check(check) for _ in range(5)]
        refused = hub.check(check)

        time.sleep(1.05)
        recovered = hub.check(check)

        assert [(h["X-RateLimit-Remaining"], r) for h, r, _ in answers] == [(str(n), None) for n in range(4, -1, -1)]
        assert refused[1:] == (1, "burst")
        assert recovered[1] is None, recovered

    def test_memory_and_redis_count_alike(self, hubs, spec):
        in_memory = ratelimit.from_spec(spec, storage_uri="memory://", scale=1)
        caller = f"tenant:{uuid.uuid4()}"

        counts = []
        for hub in (in_memory, hubs[0]):
            checks = [plan_check(hub, "free", caller), class_check(hub, "connection", caller)]
            answers = [hub.check(checks) for _ in range(52)]
            counts.append([(h["X-RateLimit-Limit"], h["X-RateLimit-Remaining"], r is None, name)
                           for h, r, name in answers])

        assert counts[0] == counts[1]
        assert counts[0][-3:] == [("50", "0", True, ""), ("50", "0", False, "connection"),
                                  ("50", "0", False, "connection")]
