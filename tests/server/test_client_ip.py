"""The client IP (issue 11 item 2): `X-Forwarded-For` is believed only from `HUB_TRUSTED_PROXIES`.

The session's hub is served by real uvicorn with the options `integration-hub serve` uses
(`server.cli.uvicorn_options`), once with the default settings (trust nobody) and once trusting
the loopback peer; the login throttle's per-IP counter and the audit entry's `ip` show which
address the hub took.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn
from sqlmodel import select

from persistence.db import transaction
from persistence.models import AuditEntry
from server import ratelimit, runtime
from server.cli import uvicorn_options

SPOOFED = "203.0.113.77"


@contextmanager
def served(app, settings, **overrides):
    """Serve `app` on a free loopback port with `integration-hub serve`'s uvicorn options."""
    options = uvicorn_options(settings.model_copy(update=overrides)) | {"log_level": "warning", "lifespan": "off"}
    options.pop("host"), options.pop("port")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the hub did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def failed_login_from(base: str, email: str) -> str:
    """Send one wrong-password login with a spoofed X-Forwarded-For; return the audited IP."""
    response = httpx.post(f"{base}/api/v1/auth/login", json={"email": email, "password": "wrong-password"},
                          headers={"X-Forwarded-For": SPOOFED})
    assert response.status_code == 401, response.text
    with transaction() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.request_id == response.headers["x-request-id"],
                                                      AuditEntry.action == "auth.login")).one()
    return entry.ip


def login_attempts_counted(ip: str) -> int:
    limits = runtime.get().rate_limits
    item = limits.item(ratelimit.LOGIN_ATTEMPTS_PER_IP)
    return item.amount - limits.limiter.get_window_stats(item, "login-ip", ip).remaining


class TestTrustedProxies:
    def test_default_trusts_no_proxy(self, settings):
        assert settings.forwarded_allow_ips == ""
        assert uvicorn_options(settings)["proxy_headers"] is False

    def test_forwarded_for_from_loopback_is_ignored_by_default(self, app, settings, client, tenant_admin):
        before = login_attempts_counted(SPOOFED)
        with served(app, settings) as base:
            ip = failed_login_from(base, tenant_admin.email)

        assert ip == "127.0.0.1"
        assert login_attempts_counted(SPOOFED) == before

    def test_forwarded_for_is_honoured_from_a_trusted_proxy(self, app, settings, client, tenant_admin):
        spoofed_before = login_attempts_counted(SPOOFED)
        with served(app, settings, trusted_proxies="127.0.0.1") as base:
            ip = failed_login_from(base, tenant_admin.email)

        assert ip == SPOOFED
        assert login_attempts_counted(SPOOFED) == spoofed_before + 1

    def test_a_list_of_proxies_and_networks(self, settings):
        configured = settings.model_copy(update={"trusted_proxies": " 10.0.0.1, 192.168.0.0/16 ,"})

        assert uvicorn_options(configured)["forwarded_allow_ips"] == "10.0.0.1,192.168.0.0/16"
        assert uvicorn_options(configured)["proxy_headers"] is True
