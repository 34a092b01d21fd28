"""Realtime across processes: an event committed by one hub process reaches another's sockets.

Two real hub processes (uvicorn subprocesses on free loopback ports) share the test database:
the change is made over HTTP on process A, the socket listens on process B. Wake-ups travel by
Redis pub/sub (`REDIS_URL`, a throwaway redis-server: mandatory in CI, skipped visibly
elsewhere when missing), by PostgreSQL LISTEN/NOTIFY, or (SQLite without Redis) by B's poll.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.cli import SERVE_LOOP
from tests import factories
from tests.conftest import JWT_SECRET
from tests.realtime_support import HOST, Socket, free_port
from tests.redis_server import redis_or_skip
from tests.server.test_realtime import asyncapi_check  # noqa: F401 - the shared fixture

ROOT = Path(__file__).resolve().parents[2]


class HubProcess:
    """`uvicorn server.app:serving_app` in a subprocess on a free loopback port."""

    def __init__(self, settings, *, redis_url: str = "") -> None:
        self.port = free_port()
        env = {**os.environ, "DATABASE_URL": settings.database_url, "JWT_SECRET": JWT_SECRET,
               "HUB_VAR_DIR": str(settings.var_dir), "REDIS_URL": redis_url, "HUB_RATE_LIMIT_SCALE": "1000",
               "HUB_REALTIME_POLL_SECONDS": "1", "HUB_LOG_FORMAT": "text"}
        self.log = open(settings.var_dir / f"hub-{self.port}.log", "w+b")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "server.app:serving_app", "--host", HOST,
             "--port", str(self.port), "--log-level", "warning", "--ws", "websockets-sansio",
             "--loop", SERVE_LOOP],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self) -> "HubProcess":
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.log.seek(0)
        raise RuntimeError(f"hub process did not start:\n{self.log.read().decode(errors='replace')[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def redis_url():
    with redis_or_skip("realtime") as server:
        yield server.url


def _two_hubs(settings, redis: str) -> list[HubProcess]:
    hubs = [HubProcess(settings, redis_url=redis) for _ in range(2)]
    try:
        return [hub.wait_ready() for hub in hubs]
    except Exception:
        for hub in hubs:
            hub.stop()
        raise


def _across(hubs, client, super_admin, tenant_admin, asyncapi_check) -> None:
    a, b = hubs
    sock = Socket.open(f"ws://{HOST}:{b.port}/ws?token={tenant_admin.access_token}", check=asyncapi_check)
    try:
        sock.send({"type": "subscribe", "channels": ["integrations"]})
        assert sock.recv_skipping_pings() == {"type": "subscribed", "channels": ["integrations"]}
        provider = factories.create_provider(client, super_admin)
        response = httpx.post(f"{a.url}/api/v1/tenant/integrations", headers=tenant_admin.headers, timeout=10,
                              json={"integrationId": provider["id"], "name": factories.unique("Across ")})
        assert response.status_code == 201, response.text
        message = sock.recv_skipping_pings()
        assert (message["type"], message["action"], message["data"]) == ("integration", "created", response.json())
    finally:
        sock.close()


@pytest.fixture(scope="module")
def plain_hubs(app, settings):
    hubs = _two_hubs(settings, "")
    yield hubs
    for hub in hubs:
        hub.stop()


def test_event_reaches_the_other_process(plain_hubs, client, super_admin, tenant_admin, asyncapi_check):
    """PostgreSQL: LISTEN/NOTIFY wakes process B; SQLite: B's poll of the shared log finds it."""
    _across(plain_hubs, client, super_admin, tenant_admin, asyncapi_check)


def test_event_reaches_the_other_process_through_redis(app, settings, redis_url, client, super_admin, tenant_admin,
                                                        asyncapi_check):
    hubs = _two_hubs(settings, redis_url)
    try:
        _across(hubs, client, super_admin, tenant_admin, asyncapi_check)
    finally:
        for hub in hubs:
            hub.stop()
